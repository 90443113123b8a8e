/* -*- c++ -*- ----------------------------------------------------------
   pair_style atomnet: atomnet TorchScript models in LAMMPS (a plugin).

   Part of atomnet. This file and the others in this folder derive from
   LAMMPS's Pair class and include LAMMPS headers, so they are distributed
   under the GNU General Public License, version 2 (see LICENSE here).
------------------------------------------------------------------------- */

#ifdef PAIR_CLASS
// clang-format off
PairStyle(atomnet,PairAtomnet);
// clang-format on
#else

#ifndef LMP_PAIR_ATOMNET_H
#define LMP_PAIR_ATOMNET_H

// libtorch before the LAMMPS headers (LAMMPS's headers define short macros)
#include <torch/csrc/autograd/autograd.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include "pair.h"

#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairAtomnet : public Pair {
 public:
  PairAtomnet(class LAMMPS *);
  ~PairAtomnet() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;

 protected:
  void allocate();
  void load_model(const std::string &filename);

  torch::jit::Module model;
  bool model_loaded;
  std::string model_file;

  // metadata read from the model's attributes
  std::vector<std::string> elements;    // element symbols, model species order
  double cutoff;                        // Angstrom
  int64_t num_interactions;
  torch::Dtype dtype;
  std::string dtype_name;
  std::string atomnet_version;

  // device: "auto" (where the model file's tensors are), "cpu", "cuda", "cuda:N"
  std::string device_request;
  torch::Device device;

  // LAMMPS atom type (1..ntypes) -> index into elements
  std::vector<int64_t> type_to_species;

  // reused host buffers
  std::vector<int64_t> species_buf;
  std::vector<int64_t> edge_src, edge_dst;
};

}    // namespace LAMMPS_NS

#endif
#endif
