//! The subcommands' argument structs and bodies; `src/main.rs` parses and dispatches.

pub mod info;
pub mod space_cmds;
