#!/usr/bin/env bash
# A real Martini 3 lipidome bilayer with the lipid model's session-10 types (the test fixture
# tests/data/lipids/lipidome_membrane_cg.gro.gz) or session-12 types (SET=v5, the fixture
# tests/data/lipids/lipidome_membrane_v5_cg.gro.gz): insane builds it, GROMACS runs 5 ns of MD.
#
#   scripts/make_lipidome_membrane.sh OUTDIR INSANE ITP_DIR MARTINI_ITP [SET]
#
# INSANE       the insane executable (pip install insane, 1.2.0, in its own venv)
# ITP_DIR      the ITPs folder of the Martini 3 lipidome (M3-Lipid-Parameters, Apache-2.0)
# MARTINI_ITP  martini_v3.0.0.itp (e.g. the first 356,605 lines of mstool 0.3.9's
#              src/mstool/FF/martini3.0.0/martini.itp)
# SET         v4 (default): SAPx, DUPx, PLPS/PLPG/PLPA; v5: the lipidome's dilinoleoyl DLPC/DLPS/DLPG/DLPA,
#             PAPE/PAPG/PAPA, and its dilauroyl DUPC (DLPC is read by its beads: dilinoleoyl here)
# GROMACS (gmx, Debian's gromacs 2022.5) on the PATH.  7 x 7 nm, 54 POPC and 8 of each new lipid,
# Martini water + 0.15 M NaCl; 2000 steps of steepest descent, 1 ns + 4 ns at 20 fs, 310 K,
# semi-isotropic 1 bar; ~2 min on 2 cores.  insane's tail letters: the lipidome's c and F are C and D
# here (insane places beads by them; GROMACS writes the .itp's bead names).
set -euo pipefail
out=$1 insane=$2 itp=$3 martini=$4 set=${5:-v4}
mkdir -p "$out"
cd "$out"
cp "$martini" martini_v3.0.0.itp
for f in ffbonded_v2 phospholipids_PC_v2 phospholipids_PE_v2 phospholipids_PS_v2 phospholipids_PG_v2 \
         phospholipids_PA_v2 solvents_v1 ions_v1; do
  cp "$itp/martini_v3.0.0_$f.itp" .
done
args=()
lipids=(-l POPC:6)
specs=("SAPC|C P|CDDDC CCCC" "SAPE|E P|CDDDC CCCC" "SAPS|S P|CDDDC CCCC" "SAPG|G P|CDDDC CCCC"
       "SAPA|P|CDDDC CCCC" "DUPE|E P|CCC CCC" "DUPS|S P|CCC CCC" "DUPG|G P|CCC CCC" "DUPA|P|CCC CCC"
       "PLPS|S P|CDDC CCCC" "PLPG|G P|CDDC CCCC" "PLPA|P|CDDC CCCC")
if [ "$set" = v5 ]; then
  specs=("DLPC|C P|CDDC CDDC" "DLPS|S P|CDDC CDDC" "DLPG|G P|CDDC CDDC" "DLPA|P|CDDC CDDC"
         "PAPE|E P|CDDDC CCCC" "PAPG|G P|CDDDC CCCC" "PAPA|P|CDDDC CCCC" "DUPC|C P|CCC CCC")
fi
for spec in "${specs[@]}"; do
  IFS='|' read -r name head tails <<< "$spec"
  args+=(-alname "$name" -alhead "$head" -allink "G G" -altail "$tails")
  lipids+=(-l "$name:1")
done
"$insane" -o cg.gro -p insane.top -x 7 -y 7 -z 9 -sol W -salt 0.15 "${lipids[@]}" "${args[@]}" > insane.log 2>&1
sed -i 's/NA+ /NA  /g; s/CL- /CL  /g' cg.gro
{
  echo '#include "martini_v3.0.0.itp"'
  echo '#include "martini_v3.0.0_ffbonded_v2.itp"'
  for h in PC PE PS PG PA; do echo "#include \"martini_v3.0.0_phospholipids_${h}_v2.itp\""; done
  echo '#include "martini_v3.0.0_solvents_v1.itp"'
  echo '#include "martini_v3.0.0_ions_v1.itp"'
  printf '\n[ system ]\nlipidome test bilayer\n\n'
  sed -n '/\[ *molecules/,$p' insane.top | sed 's/NA+/NA/; s/CL-/CL/'
} > topol.top
common="cutoff-scheme = Verlet
coulombtype = reaction-field
rcoulomb = 1.1
epsilon_r = 15
vdw_modifier = Potential-shift-verlet
rvdw = 1.1"
printf 'integrator = steep\nnsteps = 2000\n%s\n' "$common" > em.mdp
md="integrator = md
dt = 0.02
nstlist = 20
tcoupl = v-rescale
tc-grps = system
tau_t = 1.0
ref_t = 310
pcoupl = c-rescale
pcoupltype = semiisotropic
tau_p = 4.0
compressibility = 3e-4 3e-4
ref_p = 1.0 1.0
$common"
printf '%s\nnsteps = 50000\nnstxout-compressed = 5000\ngen_vel = yes\ngen_temp = 310\n' "$md" > md.mdp
printf '%s\nnsteps = 200000\nnstxout-compressed = 50000\ngen_vel = no\n' "$md" > md2.mdp
# -maxwarn: insane's bead names differ from the .itp's (GROMACS uses the .itp's)
gmx grompp -f em.mdp -c cg.gro -p topol.top -o em.tpr -maxwarn 5
gmx mdrun -deffnm em -nt 2
gmx grompp -f md.mdp -c em.gro -p topol.top -o md.tpr -maxwarn 5
gmx mdrun -deffnm md -nt 2
gmx grompp -f md2.mdp -c md.gro -t md.cpt -p topol.top -o md2.tpr -maxwarn 5
gmx mdrun -deffnm md2 -nt 2
gzip -c md2.gro > lipidome_membrane_cg.gro.gz
echo "wrote $out/lipidome_membrane_cg.gro.gz and $out/md2.xtc"
