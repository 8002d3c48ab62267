// SIMT emulator build (feature `emu`): placeholder until the emulator lands.
use std::path::Path;

pub fn build(
    _root: &Path,
    _kdir: &Path,
    _srcs: &[crate::sources::KernelSource],
    _out_dir: &Path,
) -> Result<(), String> {
    Ok(())
}
