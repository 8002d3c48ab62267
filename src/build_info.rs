//! How this binary was built, recorded by build.rs: `attnas info` prints it (a benchmark of an unoptimised
//! build is a common mistake), and the long CLI tests check that the binary they drive is optimised.

/// Cargo's `OPT_LEVEL` for this build of the crate ("0" for the dev profile, "1" for test, "3" for
/// release), recorded by build.rs.
pub const BUILD_OPT_LEVEL: &str = env!("ATTNAS_BUILD_OPT_LEVEL");
/// Whether debug assertions (and overflow checks) are compiled in: "on" or "off".
pub const BUILD_DEBUG_ASSERTIONS: &str = if cfg!(debug_assertions) { "on" } else { "off" };

/// Whether this build is optimised (any opt-level but 0). The integration tests link the library built
/// with the same profile as `CARGO_BIN_EXE_attnas`, so this also says whether that binary is.
pub fn build_is_optimised() -> bool {
    BUILD_OPT_LEVEL != "0"
}
