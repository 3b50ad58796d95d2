//! ferry's pure synchronisation core.
//!
//! Everything here is a function over values: entry trees, the reconciliation of an ancestor
//! with two sides, and the bookkeeping that follows a cycle. There is no filesystem, clock,
//! randomness or logging in this crate, so it can be tested exhaustively.
//!
//! ```
//! use ferry_core::{Entry, Mode, reconcile};
//!
//! let file = Entry::file([1; 32], 3, false);
//! let ancestor = Entry::dir([]);
//! let alpha = Entry::dir([("hello.txt", file.clone())]);
//! let beta = Entry::dir([]);
//! let plan = reconcile(Some(&ancestor), Some(&alpha), Some(&beta), Mode::TwoWaySafe);
//! assert_eq!(plan.beta.len(), 1);
//! assert_eq!(plan.beta[0].path.as_str(), "hello.txt");
//! assert!(plan.alpha.is_empty() && plan.conflicts.is_empty());
//! ```
#![deny(missing_docs)]

mod agree;
mod apply;
mod entry;
mod held;
mod mode;
mod names;
mod path;
mod reconcile;

pub use agree::{agree, agree_at, agree_made, forget, set_agreed};
pub use apply::{ApplyError, apply_changes};
pub use entry::{
    DIR_MODE, Digest, Dir, Entry, FILE_MODE, MAX_DEPTH, Mtime, PERMISSION_BITS, digests,
};
pub use held::{Held, drop_held, settle_held_conflicts, unchanged_leaves, without_held};
pub use mode::{Mode, UnknownMode};
pub use names::{Aligned, Clash, NameRules, Spellings, align_names};
pub use path::{MAX_NAME_LEN, MAX_PATH_LEN, PathError, RelPath, link_stays_inside, validate_name};
pub use reconcile::{
    Change, Conflict, Plan, WipeRefusal, check_wipe, reconcile, reconcile_at, scope,
};
