//! Integration tests: the `ferry` binary run against real directories, as a user would.
//!
//! Every test gets its own temporary alpha, beta and `XDG_STATE_HOME` (see `support`), so tests
//! run in parallel and never touch the real home directory.

mod arm64;
mod conflicts;
mod converge;
mod daemon;
mod daily;
mod exfat;
mod fresh;
mod hooks;
mod hostile;
mod mcp;
mod metadata;
mod modes;
mod names;
mod once;
mod options;
mod placement;
mod races;
mod remote;
mod remote_support;
mod review;
mod review2;
mod review3;
mod routine;
mod safety;
mod soak;
mod support;
mod up;
mod usage;
mod watch;
