//! ferry: keeps a source tree and another directory (local now; containers, SSH hosts and pods
//! through the agent) in sync, both ways, live, without losing a byte.
//!
//! The pure reconciliation lives in `ferry-core`; this crate does the I/O around it:
//! [`fs`] (scan, stage, apply), [`endpoint`] (the boundary the engine drives), [`engine`] (the
//! cycle), [`state`] (archive and lock), [`output`] (all printing) and [`cli`].

pub mod cli;
pub mod copy;
pub mod daemon;
pub mod delta;
pub mod endpoint;
pub mod engine;
pub mod files;
pub mod fs;
pub mod hooks;
pub mod identity;
pub mod mcp;
pub mod open;
pub mod output;
pub mod remote;
pub mod report;
pub mod sessions;
pub mod state;
