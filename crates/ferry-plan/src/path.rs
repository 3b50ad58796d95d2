//! Slash-separated path helpers with Go's `path.Clean` rules, since the tools we mirror (moby,
//! BuildKit) clean paths that way.

/// Go's `path.Clean`: the shortest equivalent path ("" becomes ".").
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|p| *p != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            p => out.push(p),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `filepath.Dir` for slash paths: everything before the last element, cleaned.
pub fn dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => clean(&path[..=i]),
        None => ".".to_string(),
    }
}

/// Joins a container directory and a relative path ("" for the directory itself).
pub fn join(base: &str, rel: &str) -> String {
    if rel.is_empty() {
        return base.to_string();
    }
    if base.ends_with('/') {
        format!("{base}{rel}")
    } else {
        format!("{base}/{rel}")
    }
}

/// The relative path of `path` below `base` in context-relative form ("" is the context root):
/// `Some("")` when they are the same, `None` when `path` is not below `base`.
pub fn below<'p>(base: &str, path: &'p str) -> Option<&'p str> {
    if base.is_empty() {
        return Some(path);
    }
    if path == base {
        return Some("");
    }
    path.strip_prefix(base)
        .and_then(|rest| rest.strip_prefix('/'))
}

/// The last element of a slash path.
pub fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A context-relative form of a COPY source: "/a/./b/" -> "a/b", "." and "/" -> "".
pub fn context_relative(path: &str) -> String {
    let cleaned = clean(&format!("/{path}"));
    cleaned.trim_start_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        for (input, want) in [
            ("", "."),
            (".", "."),
            ("/", "/"),
            ("a/b/", "a/b"),
            ("a//b", "a/b"),
            ("./a", "a"),
            ("a/../..", ".."),
            ("/../a", "/a"),
            ("a/./b/../c", "a/c"),
            ("**/", "**"),
        ] {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn dir_matches_go() {
        for (input, want) in [
            ("a", "."),
            ("a/b", "a"),
            ("a/b/", "a/b"),
            ("/", "/"),
            ("/a", "/"),
        ] {
            assert_eq!(dir(input), want, "dir({input:?})");
        }
    }
}
