//! ferry's pure planner for `ferry up`: from a Dockerfile, its `.dockerignore` and the build
//! settings to the sync scope of a service, with no Docker and no filesystem (the caller reads
//! the files and passes their contents; the build context is seen through [`Context`]).
//!
//! - [`DockerIgnore`]: Docker's `.dockerignore` rules (moby's `patternmatcher`), not gitignore's.
//! - [`shell::Lex`]: BuildKit's word processing (quotes, escapes, `$VAR`, `${VAR:-word}`, ...).
//! - [`plan_copies`]: the COPY/ADD mappings of the stage that is built, placed as BuildKit places
//!   them, and the sources that are not host files, with reasons.
//! - [`Scope`]: the "would a rebuild put it there" predicates, both ways.
//! - [`compose`]: the Compose model, `x-ferry`, and a service's sync plan ([`compose::plan_service`]).
//! - [`owned_dirs`]: container-owned directories (`node_modules`, `target`, ...) from manifests.
//!
//! ```
//! use ferry_plan::{BuildOptions, ContextList, DockerIgnore, Scope, plan_copies};
//!
//! let dockerfile = "FROM scratch\nWORKDIR /app\nCOPY config/*.yml ./config/\nCOPY src src\n";
//! let context: ContextList = ["config/a.yml", "src/main.js", "README.md"].into_iter().collect();
//! let ignore = DockerIgnore::parse("*.md\n").unwrap();
//! let plan = plan_copies(dockerfile, &BuildOptions::default(), &context, &ignore).unwrap();
//! let scope = Scope::new(&plan, ignore).unwrap();
//!
//! assert_eq!(scope.host_to_container("src/lib/x.js", false).as_deref(), Some("/app/src/lib/x.js"));
//! assert_eq!(scope.container_to_host("/app/config/new.yml").as_deref(), Some("config/new.yml"));
//! assert_eq!(scope.container_to_host("/app/config/new.txt"), None);
//! ```
#![deny(missing_docs)]

pub mod compose;
pub mod dockerfile;
pub mod dockerignore;
pub mod owned;
mod path;
pub mod scope;
pub mod shell;

pub use dockerfile::{
    BuildOptions, Context, ContextList, CopyPlan, EntryKind, ImageConfig, Mapping, MappingSource,
    PlanError, Skipped, plan_copies,
};
pub use dockerignore::{DockerIgnore, PatternError};
pub use owned::{OwnedDir, owned_dirs};
pub use scope::Scope;
