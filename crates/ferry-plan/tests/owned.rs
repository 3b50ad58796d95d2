//! Container-owned directories from the manifests in scope.

use ferry_plan::owned_dirs;

fn owned(files: &[&str]) -> Vec<String> {
    owned_dirs(files).iter().map(|d| d.describe()).collect()
}

#[test]
fn manifests_table() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["package.json"], &["node_modules (package.json)"]),
        (
            &["web/package.json", "web/src/a.js"],
            &["web/node_modules (web/package.json)"],
        ),
        (&["Cargo.toml", "src/main.rs"], &["target (Cargo.toml)"]),
        (
            &["pyproject.toml"],
            &[
                "**/__pycache__ (pyproject.toml)",
                ".venv (pyproject.toml)",
                "venv (pyproject.toml)",
            ],
        ),
        (
            &["api/requirements-dev.txt"],
            &[
                "api/**/__pycache__ (api/requirements-dev.txt)",
                "api/.venv (api/requirements-dev.txt)",
                "api/venv (api/requirements-dev.txt)",
            ],
        ),
        (
            &["Pipfile"],
            &[
                "**/__pycache__ (Pipfile)",
                ".venv (Pipfile)",
                "venv (Pipfile)",
            ],
        ),
        (&["composer.json"], &["vendor (composer.json)"]),
        (
            &["Gemfile", "Gemfile.lock"],
            &[".bundle (Gemfile)", "vendor/bundle (Gemfile)"],
        ),
        (
            &["build.gradle.kts"],
            &[".gradle (build.gradle.kts)", "build (build.gradle.kts)"],
        ),
        (
            &["settings.gradle", "app/build.gradle"],
            &[
                ".gradle (settings.gradle)",
                "app/.gradle (app/build.gradle)",
                "app/build (app/build.gradle)",
                "build (settings.gradle)",
            ],
        ),
        (
            &["Api/Api.csproj"],
            &["Api/bin (Api/Api.csproj)", "Api/obj (Api/Api.csproj)"],
        ),
        (&["lib.fsproj"], &["bin (lib.fsproj)", "obj (lib.fsproj)"]),
        // Not manifests.
        (
            &[
                "package-lock.json",
                "requirements.in",
                "Cargo.lock",
                "README.md",
            ],
            &[],
        ),
        // Manifests inside an owned directory do not count.
        (
            &["package.json", "node_modules/left-pad/package.json"],
            &["node_modules (package.json)"],
        ),
        (
            &["Cargo.toml", "target/debug/build/x/Cargo.toml"],
            &["target (Cargo.toml)"],
        ),
        // A nested Python project below another: one __pycache__ rule covers both.
        (
            &["pyproject.toml", "tools/requirements.txt"],
            &[
                "**/__pycache__ (pyproject.toml)",
                ".venv (pyproject.toml)",
                "tools/.venv (tools/requirements.txt)",
                "tools/venv (tools/requirements.txt)",
                "venv (pyproject.toml)",
            ],
        ),
        // Two services' manifests side by side.
        (
            &["web/package.json", "api/Cargo.toml"],
            &[
                "api/target (api/Cargo.toml)",
                "web/node_modules (web/package.json)",
            ],
        ),
    ];
    for (files, want) in cases {
        assert_eq!(owned(files), *want, "{files:?}");
    }
}

#[test]
fn contains_covers_the_directory_and_below() {
    let dirs = owned_dirs(["web/package.json", "pyproject.toml"]);
    let owned = |p: &str| dirs.iter().any(|d| d.contains(p));
    assert!(owned("web/node_modules"));
    assert!(owned("web/node_modules/react/index.js"));
    assert!(!owned("web/node_modules_backup/x"));
    assert!(!owned("node_modules/x"));
    assert!(owned("pkg/sub/__pycache__/m.pyc"));
    assert!(owned("__pycache__"));
    assert!(owned(".venv/bin/python"));
    assert!(!owned("web/src/app.js"));
}
