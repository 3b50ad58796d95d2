//! The "would a rebuild put it there" predicates, both ways, as one-line table cases.

use ferry_plan::{BuildOptions, ContextList, DockerIgnore, Scope, plan_copies};

const CONTEXT: &[&str] = &[
    "package.json",
    "app.py",
    "README.md",
    "a",
    "b",
    "src/main.js",
    "src/lib/util.js",
    "src/notes.md",
    "config/a.yml",
    "config/c.txt",
    "node_modules/x/index.js",
    "static/site.css",
    "docs/guide/intro.md",
];

fn scope(dockerfile: &str, ignore: &str) -> Scope {
    let context: ContextList = CONTEXT.iter().collect();
    let ignore = DockerIgnore::parse(ignore).expect("valid ignore file");
    let df = dockerfile.replace(" ; ", "\n");
    let plan = plan_copies(&df, &BuildOptions::default(), &context, &ignore).expect("plan");
    Scope::new(&plan, ignore).expect("scope")
}

#[test]
fn host_to_container_table() {
    // (Dockerfile, .dockerignore, host path, is a directory, expected container path)
    let cases: &[(&str, &str, &str, bool, Option<&str>)] = &[
        (
            "FROM scratch ; WORKDIR /app ; COPY . .",
            "",
            "src/new.js",
            false,
            Some("/app/src/new.js"),
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY . .",
            "",
            "src",
            true,
            Some("/app/src"),
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY . .",
            "node_modules",
            "node_modules/y/i.js",
            false,
            None,
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY . .",
            "*.md",
            "README.md",
            false,
            None,
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY . .",
            "*.md",
            "src/notes.md",
            false,
            Some("/app/src/notes.md"),
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY . .",
            "**/*.md\n!docs/**",
            "docs/guide/new.md",
            false,
            Some("/app/docs/guide/new.md"),
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY . .",
            "**/*.md\n!docs/**",
            "src/new.md",
            false,
            None,
        ),
        (
            "FROM scratch ; COPY src /srv",
            "",
            "src/lib/new.js",
            false,
            Some("/srv/lib/new.js"),
        ),
        (
            "FROM scratch ; COPY src /srv",
            "",
            "static/site.css",
            false,
            None,
        ),
        (
            "FROM scratch ; COPY app.py /srv/",
            "",
            "app.py",
            false,
            Some("/srv/app.py"),
        ),
        (
            "FROM scratch ; COPY app.py /srv/",
            "",
            "other.py",
            false,
            None,
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY config/*.yml ./config/",
            "",
            "config/x.yml",
            false,
            Some("/app/config/x.yml"),
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY config/*.yml ./config/",
            "",
            "config/x.txt",
            false,
            None,
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY config/*.yml ./config/",
            "",
            "config/sub/x.yml",
            false,
            None,
        ),
        (
            "FROM scratch ; COPY */*.js /js/",
            "",
            "src/new.js",
            false,
            Some("/js/new.js"),
        ),
        (
            "FROM scratch ; COPY src* /all/",
            "",
            "src/lib/util.js",
            false,
            Some("/all/lib/util.js"),
        ),
        (
            "FROM scratch ; COPY --exclude=*.md src /srv",
            "",
            "src/x.md",
            false,
            None,
        ),
        (
            "FROM scratch ; COPY --exclude=lib src /srv",
            "",
            "src/lib/util.js",
            false,
            None,
        ),
        (
            "FROM scratch ; COPY --exclude=*.md src /srv",
            "",
            "src/x.js",
            false,
            Some("/srv/x.js"),
        ),
        (
            "FROM scratch ; COPY --parents src/**/*.js /out/",
            "",
            "src/lib/deep/n.js",
            false,
            Some("/out/src/lib/deep/n.js"),
        ),
        (
            "FROM scratch ; COPY --parents src/**/*.js /out/",
            "",
            "src/lib/n.css",
            false,
            None,
        ),
        (
            "FROM scratch ; COPY --parents ./src/./lib /out/",
            "",
            "src/lib/n.css",
            false,
            Some("/out/lib/n.css"),
        ),
        // Paths outside the context, or spelled with dots.
        ("FROM scratch ; COPY . /app", "", "../outside", false, None),
        ("FROM scratch ; COPY . /app", "", "/etc/passwd", false, None),
        (
            "FROM scratch ; COPY . /app",
            "",
            "./src/../a",
            false,
            Some("/app/a"),
        ),
        // A later COPY placing another file at the same path overrides the earlier one.
        (
            "FROM scratch ; COPY . /app ; COPY a /app/b",
            "",
            "b",
            false,
            None,
        ),
        (
            "FROM scratch ; COPY . /app ; COPY a /app/b",
            "",
            "a",
            false,
            Some("/app/b"),
        ),
        (
            "FROM scratch ; COPY . /app ; COPY a /app/b",
            "",
            "src",
            true,
            Some("/app/src"),
        ),
    ];
    for (df, ignore, host, is_dir, want) in cases {
        assert_eq!(
            scope(df, ignore)
                .host_to_container(host, *is_dir)
                .as_deref(),
            *want,
            "{df} | {ignore:?} | {host}"
        );
    }
}

#[test]
fn container_to_host_table() {
    // (Dockerfile, .dockerignore, container path, expected host path)
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        (
            "FROM scratch ; WORKDIR /app ; COPY . .",
            "",
            "/app/src/gen.js",
            Some("src/gen.js"),
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY . .",
            "",
            "/app/./src/../gen.js",
            Some("gen.js"),
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY . .",
            "",
            "/elsewhere/x",
            None,
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY . .",
            "",
            "relative/x",
            None,
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY . .",
            "*.log",
            "/app/debug.log",
            None,
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY . .",
            "*.log",
            "/app/sub/debug.log",
            Some("sub/debug.log"),
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY . .",
            "tmp\n!tmp/keep",
            "/app/tmp/keep/x",
            Some("tmp/keep/x"),
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY . .",
            "tmp\n!tmp/keep",
            "/app/tmp/other",
            None,
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY config/*.yml ./config/",
            "",
            "/app/config/x.yml",
            Some("config/x.yml"),
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY config/*.yml ./config/",
            "",
            "/app/config/x.txt",
            None,
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY config/*.yml ./config/",
            "",
            "/app/config/sub/x.yml",
            None,
        ),
        ("FROM scratch ; COPY */*.yml /all/", "", "/all/x.yml", None),
        (
            "FROM scratch ; COPY config/?.yml /one.yml",
            "",
            "/one.yml",
            None,
        ),
        ("FROM scratch ; COPY a b /tasks/", "", "/tasks/c", None),
        ("FROM scratch ; COPY a b /tasks/", "", "/tasks/a", Some("a")),
        (
            "FROM scratch ; COPY app.py /srv/main.py",
            "",
            "/srv/main.py",
            Some("app.py"),
        ),
        (
            "FROM scratch ; COPY src /srv",
            "",
            "/srv/lib/gen.js",
            Some("src/lib/gen.js"),
        ),
        (
            "FROM scratch ; COPY --exclude=*.md src /srv",
            "",
            "/srv/x.md",
            None,
        ),
        (
            "FROM scratch ; COPY --parents src/**/*.js /out/",
            "",
            "/out/src/gen/x.js",
            Some("src/gen/x.js"),
        ),
        (
            "FROM scratch ; COPY --parents src/**/*.js /out/",
            "",
            "/out/src/gen/x.css",
            None,
        ),
        (
            "FROM scratch ; COPY --parents ./src/./lib /out/",
            "",
            "/out/lib/x.css",
            Some("src/lib/x.css"),
        ),
        // The later COPY decides; an earlier one answers where the later one places nothing.
        (
            "FROM scratch ; COPY . /app ; COPY a /app/b",
            "",
            "/app/b",
            Some("a"),
        ),
        (
            "FROM scratch ; COPY . /app ; COPY config/*.yml /app/config/",
            "",
            "/app/config/x.txt",
            Some("config/x.txt"),
        ),
        (
            "FROM scratch ; COPY . /app ; COPY config/*.yml /app/config/",
            "",
            "/app/config/x.yml",
            Some("config/x.yml"),
        ),
        (
            "FROM scratch ; COPY . /app ; COPY */*.yml /app/config/",
            "",
            "/app/config/x.yml",
            None,
        ),
        // Root mappings.
        (
            "FROM scratch ; COPY . /",
            "",
            "/etc/generated",
            Some("etc/generated"),
        ),
    ];
    for (df, ignore, container, want) in cases {
        assert_eq!(
            scope(df, ignore).container_to_host(container).as_deref(),
            *want,
            "{df} | {ignore:?} | {container}"
        );
    }
}

#[test]
fn the_two_predicates_agree() {
    // For every mapping and every candidate path: when a container path comes back to host path
    // H, a rebuild places H at that same container path (among others).
    let dockerfiles = [
        "FROM scratch ; WORKDIR /app ; COPY . .",
        "FROM scratch ; WORKDIR /app ; COPY config/*.yml ./config/ ; COPY src ./src",
        "FROM scratch ; COPY . /app ; COPY a /app/b ; COPY --exclude=*.md src /app/src",
        "FROM scratch ; COPY --parents src/**/*.js /out/ ; COPY a b /tasks/",
    ];
    let containers = [
        "/app/a",
        "/app/b",
        "/app/src/x.js",
        "/app/src/x.md",
        "/app/config/x.yml",
        "/app/config/x.txt",
        "/out/src/x.js",
        "/out/src/a/b.js",
        "/tasks/a",
        "/tasks/b",
        "/tasks/c",
        "/app/README.md",
    ];
    for df in dockerfiles {
        let s = scope(df, "*.md\n!src/**");
        for c in containers {
            if let Some(h) = s.container_to_host(c) {
                let placements = s.host_placements(&h, false);
                assert!(
                    placements.iter().any(|p| p == c),
                    "{df}: {c} -> {h} -> {placements:?}"
                );
            }
        }
    }
}
