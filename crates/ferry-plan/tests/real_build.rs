//! The planner checked against where real builds put the files: a context whose every file holds
//! a unique tag, built by the classic builder (`docker build`) and by BuildKit (`docker compose
//! build`); the image's files are exported and each one's tag says which host file it came from.
//! Every file in the image must be one of the plan's placements of that host file, every
//! placement must be in the image, and `container_to_host` must name the file's source.
//!
//! Needs a running Docker Engine and Compose v2 (`scripts/compose-v2.sh`); images are built
//! `FROM scratch`, nothing is pulled. Fails (never skips) when either is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use ferry_plan::{BuildOptions, ContextList, DockerIgnore, Scope, plan_copies};

const DOCKERFILE: &str = r#"ARG BASE_DIR=/srv
FROM scratch AS base
ARG BASE_DIR
WORKDIR ${BASE_DIR}/app
COPY package.json package-lock.json ./
COPY config/*.yml ./config/

FROM scratch AS unrelated
COPY README.md /unrelated/

FROM base AS dev
ENV SUB=lib
WORKDIR src
COPY src/${SUB} ./${SUB}
COPY src/main.js .
COPY a b /tasks/
COPY --chown=1000:1000 docs /docs
COPY ["app.py", "/json form/"]
COPY c /single-file
COPY . /all/
COPY a /all/b

FROM dev AS after
COPY app.py /never/
"#;

const DOCKERIGNORE: &str = "**/*.log\nnode_modules\ndocs/**/*.md\n!docs/keep/*.md\nsecret.txt\n";

const FILES: &[&str] = &[
    "package.json",
    "package-lock.json",
    "config/a.yml",
    "config/b.yml",
    "config/c.txt",
    "config/sub/d.yml",
    "src/main.js",
    "src/lib/util.js",
    "src/lib/deep/x.js",
    "src/debug.log",
    "a",
    "b",
    "c",
    "docs/guide.md",
    "docs/keep/k.md",
    "docs/keep/x.txt",
    "docs/img/p.png",
    "node_modules/m/index.js",
    "secret.txt",
    "README.md",
    "app.py",
    "debug.log",
];

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("{what}: cannot run {cmd:?}: {e} (these tests need docker and Compose v2)")
    });
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every regular file of the image (container path -> content), except what Docker adds.
fn image_files(image: &str, work: &Path) -> BTreeMap<String, String> {
    let id = run(
        Command::new("docker").args(["create", image, "none"]),
        "docker create",
    );
    let id = id.trim().to_string();
    let tar = work.join("image.tar");
    let export = Command::new("docker")
        .arg("export")
        .arg("-o")
        .arg(&tar)
        .arg(&id)
        .output();
    run(Command::new("docker").args(["rm", "-f", &id]), "docker rm");
    assert!(
        export.is_ok_and(|o| o.status.success()),
        "docker export {id} failed"
    );
    let root = work.join("rootfs");
    fs::create_dir_all(&root).unwrap();
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&root),
        "tar -x",
    );
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let p = entry.path();
            let ty = entry.file_type().unwrap();
            let rel = format!("/{}", p.strip_prefix(&root).unwrap().to_str().unwrap());
            if ["/dev", "/proc", "/sys", "/etc", "/.dockerenv"].contains(&rel.as_str()) {
                continue;
            }
            if ty.is_dir() {
                stack.push(p);
            } else {
                out.insert(rel, fs::read_to_string(&p).unwrap());
            }
        }
    }
    out
}

/// Writes the tagged context; returns content -> host path.
fn write_context(dir: &Path) -> BTreeMap<String, String> {
    let mut by_content = BTreeMap::new();
    for (i, f) in FILES.iter().enumerate() {
        let p = dir.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        // Sizes differ too: the classic builder's layer diff can miss a file replaced by one of
        // the same size and (second-granular) mtime, which is a builder quirk, not a placement.
        let tag = format!("tag:{f}\n{}", ".".repeat(i));
        fs::write(&p, &tag).unwrap();
        by_content.insert(tag, f.to_string());
    }
    fs::write(dir.join("Dockerfile"), DOCKERFILE).unwrap();
    fs::write(dir.join(".dockerignore"), DOCKERIGNORE).unwrap();
    by_content.insert(DOCKERFILE.to_string(), "Dockerfile".to_string());
    by_content.insert(DOCKERIGNORE.to_string(), ".dockerignore".to_string());
    by_content
}

fn scope_for(build_args: &[(&str, &str)]) -> Scope {
    let mut files: Vec<&str> = FILES.to_vec();
    files.extend(["Dockerfile", ".dockerignore"]);
    let context: ContextList = files.iter().collect();
    let ignore = DockerIgnore::parse(DOCKERIGNORE).unwrap();
    let options = BuildOptions {
        target: Some("dev".into()),
        build_args: build_args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..BuildOptions::default()
    };
    let plan = plan_copies(DOCKERFILE, &options, &context, &ignore).unwrap();
    Scope::new(&plan, ignore).unwrap()
}

fn check(
    scope: &Scope,
    by_content: &BTreeMap<String, String>,
    image: &BTreeMap<String, String>,
    builder: &str,
    at_least: usize,
) {
    let mut problems = Vec::new();
    for (container, content) in image {
        let Some(host) = by_content.get(content) else {
            problems.push(format!(
                "{container}: content {content:?} is no context file"
            ));
            continue;
        };
        let placements = scope.host_placements(host, false);
        if !placements.contains(container) {
            problems.push(format!(
                "{container} came from {host}, the plan places {host} at {placements:?}"
            ));
        }
        if scope.container_to_host(container).as_deref() != Some(host.as_str()) {
            problems.push(format!(
                "container_to_host({container}) = {:?}, the build took {host}",
                scope.container_to_host(container)
            ));
        }
    }
    let mut expected = BTreeSet::new();
    for host in by_content.values() {
        for c in scope.host_placements(host, false) {
            match image.get(&c) {
                Some(content) if by_content.get(content) == Some(host) => {}
                Some(content) => problems.push(format!(
                    "plan puts {host} at {c}, the image has {content:?} there"
                )),
                None => problems.push(format!(
                    "plan puts {host} at {c}, the image has nothing there"
                )),
            }
            expected.insert(c);
        }
    }
    assert!(
        expected.len() >= at_least,
        "too few placements to mean anything: {expected:?}"
    );
    assert!(
        problems.is_empty(),
        "{builder}: the plan and the real build disagree:\n{}",
        problems.join("\n")
    );
}

#[test]
fn plan_matches_classic_docker_build() {
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    let by_content = write_context(&ctx);
    let tag = format!("ferry-plan-test-classic-{}", std::process::id());
    run(
        Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args([
                "build",
                "-q",
                "--target",
                "dev",
                "--build-arg",
                "BASE_DIR=/opt",
                "-t",
                &tag,
            ])
            .arg(&ctx),
        "docker build (classic builder)",
    );
    let image = image_files(&tag, work.path());
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    check(
        &scope_for(&[("BASE_DIR", "/opt")]),
        &by_content,
        &image,
        "classic docker build",
        20,
    );
}

#[test]
fn plan_matches_compose_buildkit_build() {
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    let by_content = write_context(&ctx);
    let tag = format!("ferry-plan-test-compose-{}", std::process::id());
    let compose = format!(
        "services:\n  t:\n    image: {tag}\n    build:\n      context: .\n      target: dev\n      args:\n        BASE_DIR: /opt\n"
    );
    fs::write(ctx.join("compose.yaml"), compose).unwrap();
    // compose.yaml is in the context too; it is no tagged file, so keep it out of the image.
    fs::write(
        ctx.join(".dockerignore"),
        format!("{DOCKERIGNORE}compose.yaml\n"),
    )
    .unwrap();
    let mut by_content = by_content;
    by_content.remove(DOCKERIGNORE);
    by_content.insert(
        format!("{DOCKERIGNORE}compose.yaml\n"),
        ".dockerignore".to_string(),
    );
    run(
        Command::new("docker")
            .current_dir(&ctx)
            .args(["compose", "-p", &tag, "build", "--quiet"]),
        "docker compose build (BuildKit)",
    );
    let image = image_files(&tag, work.path());
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    // The plan sees the same ignore file the build did.
    let mut files: Vec<&str> = FILES.to_vec();
    files.extend(["Dockerfile", ".dockerignore", "compose.yaml"]);
    let context: ContextList = files.iter().collect();
    let ignore_text = format!("{DOCKERIGNORE}compose.yaml\n");
    let ignore = DockerIgnore::parse(&ignore_text).unwrap();
    let options = BuildOptions {
        target: Some("dev".into()),
        build_args: [("BASE_DIR".to_string(), "/opt".to_string())].into(),
        ..BuildOptions::default()
    };
    let plan = plan_copies(DOCKERFILE, &options, &context, &ignore).unwrap();
    let scope = Scope::new(&plan, ignore).unwrap();
    check(&scope, &by_content, &image, "docker compose build", 20);
}

#[test]
fn dockerfile_specific_ignore_file_wins_in_a_buildkit_build() {
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    let tag = format!("ferry-plan-test-dfignore-{}", std::process::id());
    let texts = [
        ("a", "tag:a\n".to_string()),
        ("b", "tag:b\n.".to_string()),
        ("c", "tag:c\n..".to_string()),
        ("Dockerfile", "FROM scratch\nCOPY . /x/\n".to_string()),
        (".dockerignore", "b\ncompose.yaml\n".to_string()),
        ("Dockerfile.dockerignore", "a\ncompose.yaml\n".to_string()),
        (
            "compose.yaml",
            format!("services:\n  t:\n    image: {tag}\n    build: .\n"),
        ),
    ];
    let mut by_content = BTreeMap::new();
    for (name, text) in &texts {
        fs::write(ctx.join(name), text).unwrap();
        by_content.insert(text.clone(), name.to_string());
    }
    run(
        Command::new("docker")
            .current_dir(&ctx)
            .args(["compose", "-p", &tag, "build", "--quiet"]),
        "docker compose build",
    );
    let image = image_files(&tag, work.path());
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();

    let chosen =
        ferry_plan::dockerignore::choose(Some(texts[5].1.as_str()), Some(texts[4].1.as_str()));
    let ignore = DockerIgnore::parse(chosen.unwrap()).unwrap();
    let context: ContextList = texts.iter().map(|(n, _)| *n).collect();
    let plan = plan_copies(&texts[3].1, &BuildOptions::default(), &context, &ignore).unwrap();
    let scope = Scope::new(&plan, ignore).unwrap();
    assert!(
        image.contains_key("/x/b") && !image.contains_key("/x/a"),
        "{image:?}"
    );
    check(
        &scope,
        &by_content,
        &image,
        "docker compose build with Dockerfile.dockerignore",
        5,
    );
}
