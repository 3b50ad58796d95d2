//! `.dockerignore` matching against moby's own test vectors, plus table cases of the rules
//! `ferry up` leans on.

use ferry_plan::DockerIgnore;

fn matches(patterns: &[&str], path: &str) -> Result<bool, String> {
    DockerIgnore::new(patterns)
        .map(|m| m.matches(path))
        .map_err(|e| e.to_string())
}

#[test]
fn moby_patternmatcher_vectors() {
    let text = include_str!("vectors/moby_patternmatcher.txt");
    let mut failures = Vec::new();
    let mut count = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 3, "bad vector line {line:?}");
        let (pattern, path, expected) = (fields[0], fields[1], fields[2]);
        let got = match matches(&[pattern], path) {
            Ok(b) => b.to_string(),
            Err(_) => "error".to_string(),
        };
        count += 1;
        if got != expected {
            failures.push(format!(
                "pattern {pattern:?} path {path:?}: want {expected}, got {got}"
            ));
        }
    }
    assert!(count > 100, "only {count} vectors read");
    assert!(
        failures.is_empty(),
        "{} of {count} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn moby_multi_pattern_vectors() {
    // patternmatcher_test.go multiPatternTests, plus the single-function tests above them.
    let whl = "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl";
    let cases: &[(&[&str], &str, bool)] = &[
        (&["**", "!util/docker/web"], "util/docker/web/foo", false),
        (
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo",
            true,
        ),
        (
            &[
                "**",
                "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            ],
            whl,
            false,
        ),
        (&["**", "!dist/*.whl"], whl, false),
        (&["*"], "fileutils.go", true),
        (&["*.go"], "fileutils.go", true),
        (&["!fileutils.go", "*.go"], "fileutils.go", true),
        (&["docs", "!docs/README.md"], "docs/README.md", false),
        (&["docs/", "!docs/README.md"], "docs/README.md", false),
        (&["docs/*", "!docs/README.md"], "docs/README.md", false),
        (&["*.go", "!fileutils.go"], "fileutils.go", false),
        (&[], "/any/path/there", false),
    ];
    for (patterns, path, want) in cases {
        assert_eq!(matches(patterns, path), Ok(*want), "{patterns:?} {path:?}");
    }
    assert!(matches(&["!"], "fileutils.go").is_err());
    assert!(matches(&["["], "/any/path/there").is_err());
    // moby accepts "[Local-Only]/" and fails at match time (its regexp has the range l-O out
    // of order); ferry refuses it up front, with the same verdict: the pattern is bad.
    assert!(matches(&["[Local-Only]/"], "x").is_err());
}

#[test]
fn docker_rules_not_gitignore_rules() {
    let cases: &[(&[&str], &str, bool)] = &[
        // A pattern is anchored at the context root, unlike gitignore.
        (&["*.log"], "a.log", true),
        (&["*.log"], "sub/a.log", false),
        (&["**/*.log"], "sub/deep/a.log", true),
        // A directory excluded excludes what is below unless re-included; last match wins.
        (&["build"], "build/x/y.o", true),
        (&["build", "!build/keep"], "build/keep/y.o", false),
        (
            &["build", "!build/keep", "build/keep/*.o"],
            "build/keep/y.o",
            true,
        ),
        (&["!build/keep", "build"], "build/keep/y.o", true),
        // Patterns are cleaned like filepath.Clean.
        (&["./secret/../token"], "token", true),
        (&["a//b/"], "a/b/c", true),
        // `**` forms.
        (&["node_modules/**"], "node_modules", false),
        (&["node_modules/**"], "node_modules/x/y", true),
        (&["**/node_modules"], "a/b/node_modules/c", true),
        (&["**.md"], "docs/guide.md", true),
        (&["**"], "anything/at/all", true),
        (&["**", "!src/**"], "src/main.rs", false),
        (&["**", "!src"], "src/main.rs", false),
        // `?` and classes never cross `/`.
        (&["a?b"], "a/b", false),
        (&["a[/]b"], "a/b", true),
        (&[".*"], ".env", true),
        (&[".*"], "config/.env", false),
    ];
    for (patterns, path, want) in cases {
        assert_eq!(matches(patterns, path), Ok(*want), "{patterns:?} {path:?}");
    }
}

#[test]
fn parsed_file_applies_comments_negations_and_cleaning() {
    let ignore = DockerIgnore::parse(
        "# build output\n/target\n  *.tmp  \n\n!keep.tmp\n#not-a-comment-below\n docs/#x \n",
    )
    .unwrap();
    assert!(ignore.matches("target/debug/ferry"));
    assert!(ignore.matches("a.tmp"));
    assert!(!ignore.matches("keep.tmp"));
    assert!(!ignore.matches("sub/a.tmp"));
    assert!(ignore.matches("docs/#x"));
    assert!(!ignore.matches("#not-a-comment-below"));
    // The file reader (moby's ignorefile) drops a leading slash; the matcher alone does not.
    assert!(DockerIgnore::parse("/secret\n").unwrap().matches("secret"));
    assert!(!DockerIgnore::new(["/secret"]).unwrap().matches("secret"));
}

#[test]
fn dockerfile_specific_ignore_file_wins() {
    use ferry_plan::dockerignore::choose;
    assert_eq!(choose(Some("a"), Some("b")), Some("a"));
    assert_eq!(choose(None, Some("b")), Some("b"));
    assert_eq!(choose(None, None), None);
}
