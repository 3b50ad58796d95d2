//! Container-owned directories: what a service's build or package manager fills inside the
//! container, detected from the manifests in scope, and left out of sync both ways so neither
//! side's build breaks the other's (`node_modules` built for the container's libc must not land
//! on a macOS host, and the host's must not replace it).

use std::collections::BTreeMap;

use crate::path;

/// A directory the container owns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OwnedDir {
    /// Context-relative path of the directory (for `nested`, the directory its name is looked
    /// for below, "" for the root).
    pub path: String,
    /// Whether the directory is `name` at any depth below `path` (`__pycache__` sits beside
    /// every Python module), rather than `path` itself.
    pub nested: Option<String>,
    /// The manifest that made it owned (context-relative).
    pub manifest: String,
}

impl OwnedDir {
    /// Whether a context-relative path is this directory or inside it.
    pub fn contains(&self, p: &str) -> bool {
        match &self.nested {
            None => path::below(&self.path, p).is_some(),
            Some(name) => match path::below(&self.path, p) {
                Some(rel) => rel.split('/').any(|part| part == name),
                None => false,
            },
        }
    }

    /// How it reads in the start-up listing: `web/node_modules (package.json)`.
    pub fn describe(&self) -> String {
        let shown = match &self.nested {
            None => self.path.clone(),
            Some(name) if self.path.is_empty() => format!("**/{name}"),
            Some(name) => format!("{}/**/{name}", self.path),
        };
        format!("{shown} ({})", self.manifest)
    }
}

/// Which directories a manifest file name makes owned, beside it. `Some(name)` in the second
/// place means "a directory called name at any depth".
fn owned_by(file_name: &str) -> &'static [(&'static str, bool)] {
    const NODE: &[(&str, bool)] = &[("node_modules", false)];
    const CARGO: &[(&str, bool)] = &[("target", false)];
    const PYTHON: &[(&str, bool)] = &[(".venv", false), ("venv", false), ("__pycache__", true)];
    const COMPOSER: &[(&str, bool)] = &[("vendor", false)];
    const BUNDLER: &[(&str, bool)] = &[("vendor/bundle", false), (".bundle", false)];
    const GRADLE: &[(&str, bool)] = &[(".gradle", false), ("build", false)];
    const DOTNET: &[(&str, bool)] = &[("bin", false), ("obj", false)];
    let lower = file_name.to_ascii_lowercase();
    match file_name {
        "package.json" => NODE,
        "Cargo.toml" => CARGO,
        "pyproject.toml" | "Pipfile" => PYTHON,
        "composer.json" => COMPOSER,
        "Gemfile" => BUNDLER,
        "build.gradle" | "build.gradle.kts" | "settings.gradle" | "settings.gradle.kts" => GRADLE,
        _ if lower.starts_with("requirements") && lower.ends_with(".txt") => PYTHON,
        _ if [".csproj", ".fsproj", ".vbproj"]
            .iter()
            .any(|e| lower.ends_with(e)) =>
        {
            DOTNET
        }
        _ => &[],
    }
}

/// The container-owned directories among the files in scope (context-relative paths of files).
/// Manifests inside a directory already owned (a dependency's own `package.json` in
/// `node_modules`) do not count. Sorted by path; one entry per directory, naming the
/// shallowest manifest (then the first in path order) that owns it.
pub fn owned_dirs<S: AsRef<str>>(files: impl IntoIterator<Item = S>) -> Vec<OwnedDir> {
    let mut files: Vec<String> = files
        .into_iter()
        .map(|f| path::context_relative(f.as_ref()))
        .collect();
    // Shallow manifests first, so one inside a directory they own is seen as such.
    files.sort_by(|a, b| (a.matches('/').count(), a).cmp(&(b.matches('/').count(), b)));
    let mut found: BTreeMap<(String, Option<String>), OwnedDir> = BTreeMap::new();
    for file in &files {
        let name = path::base(file);
        let owned = owned_by(name);
        if owned.is_empty() || found.values().any(|d| d.contains(file)) {
            continue;
        }
        let dir = match file.rfind('/') {
            Some(i) => &file[..i],
            None => "",
        };
        for (owned_name, nested) in owned {
            let key = if *nested {
                (dir.to_string(), Some(owned_name.to_string()))
            } else {
                (join(dir, owned_name), None)
            };
            found.entry(key.clone()).or_insert(OwnedDir {
                path: key.0,
                nested: key.1,
                manifest: file.clone(),
            });
        }
    }
    // A nested rule below another nested rule for the same name adds nothing.
    let all: Vec<OwnedDir> = found.into_values().collect();
    all.iter()
        .filter(|d| {
            !all.iter().any(|o| {
                o != *d
                    && o.nested.is_some()
                    && o.nested == d.nested
                    && path::below(&o.path, &d.path).is_some_and(|r| !r.is_empty())
            })
        })
        .cloned()
        .collect()
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}
