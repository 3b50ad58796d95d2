//! The filesystem side: scanning, ignore rules, staging and applying changes to a local root.

pub mod beneath;
pub mod ignore;
pub mod meta;
pub mod names;
pub mod owner;
pub mod scan;
pub mod stage;
pub mod sys;
pub mod transition;
pub mod watch;
