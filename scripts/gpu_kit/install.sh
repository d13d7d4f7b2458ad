# Sourced by the scripts that run on a lent GPU machine (run_gpu.sh, registered_seeds.sh):
# install_kit KIT VENV REPO installs the kit that prepare.sh made (carried with the working tree)
# offline into a venv that also sees the machine's own torch, then objcrop from REPO, and sets
# PYTHON to that venv's interpreter. Returns non-zero (with a message) when anything is missing.
install_kit() {
  local kit="$1" venv="$2" repo="$3" site
  [ -d "$kit/wheels" ] || { echo "install_kit: no kit at $kit (run scripts/gpu_kit/prepare.sh here; carry .gpu_kit)" >&2; return 2; }
  python3 -m venv --system-site-packages "$venv" || return 2
  # A venv made from a venv (the machine's python3 lives in one) sees the base interpreter's
  # site-packages, not its parent's, where torch is: name the parent's directories explicitly.
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  python3 -c 'import site; print("\n".join(site.getsitepackages()))' > "$site/zz_parent_site.pth"
  echo "$kit/src" > "$site/objcrop_gpu_kit_detectron2.pth"
  "$venv/bin/python" -m pip install -q --no-index --no-deps --no-cache-dir "$kit"/wheels/*.whl || return 2
  "$venv/bin/python" -m pip install -q --no-index --no-deps --no-build-isolation -e "$repo" || return 2
  PYTHON="$venv/bin/python"
}
