/* ----------------------------------------------------------------------
   pair_style atomnet: atomnet TorchScript models in LAMMPS (a plugin).

   Part of atomnet. Derives from LAMMPS's Pair class and includes LAMMPS
   headers, so it is distributed under the GNU General Public License,
   version 2 (see LICENSE in this folder).

   How it works. The pair style requests a FULL neighbour list and needs
   "newton pair on". On every force call it hands the model the positions
   of all local and ghost atoms (ghosts are periodic images or atoms of
   other ranks, already at their image-shifted positions, so no cell
   shifts are needed), the species of each atom and the directed pairs
   (i, j) with i local and |x_j - x_i| < cutoff, grouped by center in
   ascending order of i. The model returns the
   energies of the local atoms; the forces are -dE/dx on every atom,
   ghosts included. LAMMPS adds the ghost forces back to their owners
   (reverse communication) and the virial follows from sum_k x_k . f_k
   (virial_fdotr_compute), which is correct for any model whose energy
   depends only on these positions.

   Model interface (TorchScript, see atomnet/lammps): attributes
   elements (List[str]), cutoff (float), num_interactions (int),
   dtype (str), atomnet_version (str); method
   forward(positions (N,3), species (N,) int64, edge_index (2,E) int64,
   nlocal int) -> per-atom energies (nlocal,) in eV.
------------------------------------------------------------------------- */

#include "pair_atomnet.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"

#include <torch/csrc/jit/runtime/graph_executor.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cstring>
#include <exception>

using namespace LAMMPS_NS;

/* ---------------------------------------------------------------------- */

PairAtomnet::PairAtomnet(LAMMPS *lmp) :
    Pair(lmp), model_loaded(false), cutoff(0.0), num_interactions(1), dtype(torch::kFloat64),
    device_request("auto"), device(torch::kCPU)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  // the per-atom virial of a many-body model has no unique split; not computed
  centroidstressflag = CENTROID_NOTAVAIL;
#if defined(__GLIBC__)
  // Every step allocates and frees the same large tensors. glibc serves blocks above its
  // mmap threshold with fresh mmap()s, so each step paid for page faults and zeroing in
  // the kernel: on a 1,536-atom water box, 520 ms/step with 40% of it system time, and
  // 310 ms/step with the heap reused. Keep large blocks on the heap and keep the heap.
  // (The same as MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824 in the environment.)
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
#endif
}

/* ---------------------------------------------------------------------- */

PairAtomnet::~PairAtomnet()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

/* ---------------------------------------------------------------------- */

void PairAtomnet::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
  memory->create(cutsq, n, n, "pair:cutsq");
}

/* ----------------------------------------------------------------------
   pair_style atomnet [device auto|cpu|cuda|cuda:N]
------------------------------------------------------------------------- */

void PairAtomnet::settings(int narg, char **arg)
{
  int iarg = 0;
  while (iarg < narg) {
    if (strcmp(arg[iarg], "device") == 0) {
      if (iarg + 1 >= narg) error->all(FLERR, "pair_style atomnet: 'device' needs a value");
      std::string value = arg[iarg + 1];
      if (value != "auto" && value != "cpu" && value != "cuda" && value.rfind("cuda:", 0) != 0)
        error->all(FLERR,
                   "pair_style atomnet: unknown device '{}' (use auto, cpu, cuda or cuda:N)",
                   value);
      device_request = value;
      iarg += 2;
    } else {
      error->all(FLERR,
                 "pair_style atomnet: unknown argument '{}' (usage: pair_style atomnet "
                 "[device auto|cpu|cuda|cuda:N])",
                 arg[iarg]);
    }
  }
}

/* ----------------------------------------------------------------------
   read the TorchScript file and its metadata (on every rank)
------------------------------------------------------------------------- */

void PairAtomnet::load_model(const std::string &filename)
{
  std::string problem;
  torch::jit::Module module;

  bool want_cuda = device_request.rfind("cuda", 0) == 0;
  if (want_cuda && !torch::cuda::is_available())
    error->all(FLERR,
               "pair_style atomnet: device {} requested but this libtorch has no CUDA device "
               "available",
               device_request);

  try {
    if (device_request == "auto") {
      try {
        module = torch::jit::load(filename);
      } catch (const c10::Error &) {
        // e.g. tensors saved on a GPU that is not there: fall back to the CPU
        module = torch::jit::load(filename, torch::Device(torch::kCPU));
      }
    } else {
      module = torch::jit::load(filename, torch::Device(device_request));
    }
  } catch (const c10::Error &e) {
    problem = e.what_without_backtrace();
  } catch (const std::exception &e) {
    problem = e.what();
  }
  if (!problem.empty())
    error->one(FLERR, "pair_style atomnet: cannot load the TorchScript model file '{}': {}",
               filename, problem);

  const char *required[] = {"elements", "cutoff", "num_interactions", "dtype"};
  for (const char *name : required)
    if (!module.hasattr(name))
      error->all(FLERR,
                 "pair_style atomnet: '{}' is not an atomnet LAMMPS model (no attribute '{}'); "
                 "export one with atomnet's LAMMPS exporter",
                 filename, name);

  try {
    elements.clear();
    for (const auto &item : module.attr("elements").toListRef())
      elements.push_back(item.toStringRef());
    cutoff = module.attr("cutoff").toDouble();
    num_interactions = module.attr("num_interactions").toInt();
    dtype_name = module.attr("dtype").toStringRef();
    atomnet_version =
        module.hasattr("atomnet_version") ? module.attr("atomnet_version").toStringRef() : "?";
  } catch (const c10::Error &e) {
    error->all(FLERR, "pair_style atomnet: bad metadata in model file '{}': {}", filename,
               e.what_without_backtrace());
  }

  if (dtype_name == "float64")
    dtype = torch::kFloat64;
  else if (dtype_name == "float32")
    dtype = torch::kFloat32;
  else
    error->all(FLERR, "pair_style atomnet: model '{}' has dtype '{}' (expected float64 or float32)",
               filename, dtype_name);

  if (!(cutoff > 0.0))
    error->all(FLERR, "pair_style atomnet: model '{}' has a non-positive cutoff {}", filename,
               cutoff);

  if (num_interactions > 1)
    error->all(FLERR,
               "pair_style atomnet: model '{}' is a message-passing model with {} interaction "
               "layers; ghost-mode message passing is not supported yet (only models with "
               "num_interactions = 1, e.g. Behler-Parrinello, run in LAMMPS)",
               filename, num_interactions);

  // the device the model runs on: where its tensors are (auto) or the requested one
  device = torch::Device(torch::kCPU);
  if (device_request == "auto") {
    bool found = false;
    for (const auto &p : module.parameters()) {
      device = p.device();
      found = true;
      break;
    }
    if (!found)
      for (const auto &b : module.buffers()) {
        device = b.device();
        break;
      }
  } else {
    device = torch::Device(device_request);
  }

  module.eval();
  // The graph executor's profiling and fusion passes made this model slower, not faster:
  // a 1,536-atom water box took ~380 ms per call with them and ~270 ms without (one
  // thread), and the first calls ran at twice that while it profiled. Plain execution.
  torch::jit::setGraphExecutorOptimize(false);
  model = module;
  model_loaded = true;
  model_file = filename;
}

/* ----------------------------------------------------------------------
   pair_coeff * * MODEL.pt El1 El2 ... (one element per LAMMPS atom type)
------------------------------------------------------------------------- */

void PairAtomnet::coeff(int narg, char **arg)
{
  if (!allocated) allocate();

  int ntypes = atom->ntypes;
  if (narg != 3 + ntypes)
    error->all(FLERR,
               "pair_coeff for atomnet: expected 'pair_coeff * * MODEL.pt' and one element "
               "symbol for each of the {} atom types, got {} arguments",
               ntypes, narg);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for atomnet: the atom types must be '* *'");

  load_model(arg[2]);

  type_to_species.assign(ntypes + 1, -1);
  for (int itype = 1; itype <= ntypes; itype++) {
    std::string symbol = arg[2 + itype];
    auto it = std::find(elements.begin(), elements.end(), symbol);
    if (it == elements.end()) {
      std::string known;
      for (const auto &e : elements) known += (known.empty() ? "" : " ") + e;
      error->all(FLERR,
                 "pair_coeff for atomnet: element '{}' (atom type {}) is not in model '{}', "
                 "whose elements are: {}",
                 symbol, itype, arg[2], known);
    }
    type_to_species[itype] = it - elements.begin();
  }

  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;

  if (comm->me == 0) {
    std::string symbols;
    for (const auto &e : elements) symbols += (symbols.empty() ? "" : " ") + e;
    utils::logmesg(lmp,
                   "pair_style atomnet: model {} (atomnet {}), elements {}, cutoff {} A, {}, "
                   "device {}\n",
                   model_file, atomnet_version, symbols, cutoff, dtype_name, device.str());
  }
}

/* ---------------------------------------------------------------------- */

void PairAtomnet::init_style()
{
  if (force->newton_pair == 0)
    error->all(FLERR,
               "pair_style atomnet requires 'newton on' (newton pair on): forces on ghost atoms "
               "are sent back to their owners");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style atomnet requires 'units metal' (eV, Angstrom), not units {}",
               update->unit_style);
  if (!model_loaded)
    error->all(FLERR, "pair_style atomnet: no model; use 'pair_coeff * * MODEL.pt El1 El2 ...'");

  neighbor->add_request(this, NeighConst::REQ_FULL);
}

/* ---------------------------------------------------------------------- */

double PairAtomnet::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "All pair coeffs are not set");
  return cutoff;
}

/* ---------------------------------------------------------------------- */

void PairAtomnet::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);

  if (vflag_atom || cvflag_atom)
    error->all(FLERR,
               "pair_style atomnet does not compute per-atom virials (compute stress/atom, "
               "centroid/stress/atom); the global virial and pressure are available");

  const int nlocal = atom->nlocal;
  const int ntotal = nlocal + atom->nghost;
  double **x = atom->x;
  double **f = atom->f;
  int *type = atom->type;

  if (nlocal > 0) {
    // species of every atom, local and ghost
    species_buf.resize(ntotal);
    for (int k = 0; k < ntotal; k++) species_buf[k] = type_to_species[type[k]];

    // directed pairs (i local, j local or ghost) within the cutoff
    const double cutsq_model = cutoff * cutoff;
    const int inum = list->inum;
    int *ilist = list->ilist;
    int *numneigh = list->numneigh;
    int **firstneigh = list->firstneigh;
    edge_src.clear();
    edge_dst.clear();
    for (int ii = 0; ii < inum; ii++) {
      const int i = ilist[ii];
      const double xi = x[i][0], yi = x[i][1], zi = x[i][2];
      const int *jlist = firstneigh[i];
      const int jnum = numneigh[i];
      for (int jj = 0; jj < jnum; jj++) {
        const int j = jlist[jj] & NEIGHMASK;
        const double dx = x[j][0] - xi, dy = x[j][1] - yi, dz = x[j][2] - zi;
        if (dx * dx + dy * dy + dz * dz < cutsq_model) {
          edge_src.push_back(i);
          edge_dst.push_back(j);
        }
      }
    }
    const int64_t nedges = static_cast<int64_t>(edge_src.size());

    // centers ascending (a full list's ilist is already in that order; keep the promise
    // to the model even for lists that are not): stable counting sort by center
    if (!std::is_sorted(edge_src.begin(), edge_src.end())) {
      std::vector<int64_t> start(nlocal + 1, 0);
      for (auto i : edge_src) start[i + 1]++;
      for (int i = 0; i < nlocal; i++) start[i + 1] += start[i];
      std::vector<int64_t> src(nedges), dst(nedges);
      for (int64_t e = 0; e < nedges; e++) {
        int64_t pos = start[edge_src[e]]++;
        src[pos] = edge_src[e];
        dst[pos] = edge_dst[e];
      }
      edge_src.swap(src);
      edge_dst.swap(dst);
    }

    auto cpu_long = torch::TensorOptions().dtype(torch::kInt64);
    auto cpu_double = torch::TensorOptions().dtype(torch::kFloat64);

    // copies: the model never sees LAMMPS's own memory
    torch::Tensor positions = torch::from_blob(&x[0][0], {ntotal, 3}, cpu_double)
                                  .to(device, dtype, /*non_blocking=*/false, /*copy=*/true)
                                  .requires_grad_(true);
    torch::Tensor species = torch::from_blob(species_buf.data(), {ntotal}, cpu_long)
                                .to(device, torch::kInt64, false, true);
    torch::Tensor edge_index = torch::empty({2, nedges}, cpu_long);
    if (nedges > 0) {
      std::memcpy(edge_index.data_ptr<int64_t>(), edge_src.data(), nedges * sizeof(int64_t));
      std::memcpy(edge_index.data_ptr<int64_t>() + nedges, edge_dst.data(),
                  nedges * sizeof(int64_t));
    }
    edge_index = edge_index.to(device);

    torch::Tensor atom_energies;
    torch::Tensor gradient;
    std::string problem;
    try {
      std::vector<torch::jit::IValue> inputs{positions, species, edge_index,
                                             static_cast<int64_t>(nlocal)};
      atom_energies = model.forward(inputs).toTensor();
      if (atom_energies.dim() != 1 || atom_energies.size(0) != nlocal) {
        std::string shape;
        for (auto n : atom_energies.sizes()) shape += (shape.empty() ? "" : ", ") + std::to_string(n);
        problem = "forward() returned a tensor of shape (" + shape + "); expected (" +
            std::to_string(nlocal) + ",)";
      } else {
        torch::Tensor energy = atom_energies.sum();
        if (energy.requires_grad()) {
          auto grads = torch::autograd::grad({energy}, {positions}, /*grad_outputs=*/{},
                                             /*retain_graph=*/false, /*create_graph=*/false,
                                             /*allow_unused=*/true);
          gradient = grads[0];
        }
      }
    } catch (const c10::Error &e) {
      problem = e.what_without_backtrace();
    } catch (const std::exception &e) {
      problem = e.what();
    }
    if (!problem.empty())
      error->one(FLERR, "pair_style atomnet: evaluating model '{}' failed: {}", model_file,
                 problem);

    // forces on every atom, ghosts included (reverse comm adds them to their owners)
    if (gradient.defined()) {
      torch::Tensor g = gradient.detach().to(torch::kCPU, torch::kFloat64).contiguous();
      const double *gp = g.data_ptr<double>();
      for (int k = 0; k < ntotal; k++) {
        f[k][0] -= gp[3 * k + 0];
        f[k][1] -= gp[3 * k + 1];
        f[k][2] -= gp[3 * k + 2];
      }
    }

    if (eflag_either) {
      torch::Tensor e = atom_energies.detach().to(torch::kCPU, torch::kFloat64).contiguous();
      const double *ep = e.data_ptr<double>();
      if (eflag_global) {
        double sum = 0.0;
        for (int i = 0; i < nlocal; i++) sum += ep[i];
        eng_vdwl += sum;
      }
      if (eflag_atom)
        for (int i = 0; i < nlocal; i++) eatom[i] += ep[i];
    }
  }

  if (vflag_fdotr) virial_fdotr_compute();
}

/* ----------------------------------------------------------------------
   factory used by the plugin registration (atomnet_plugin.cpp)
------------------------------------------------------------------------- */

namespace LAMMPS_NS {
Pair *atomnet_new_pair(LAMMPS *lmp)
{
  return new PairAtomnet(lmp);
}
}    // namespace LAMMPS_NS
