//! Real-world-shaped Dockerfiles (the way Node, Python, Rust and Rails projects are commonly
//! written), with the mappings, skips and sync decisions `ferry up` would make for them.

use std::collections::BTreeMap;

use ferry_plan::{
    BuildOptions, ContextList, CopyPlan, DockerIgnore, ImageConfig, MappingSource, Scope,
    owned_dirs, plan_copies,
};

fn lines(plan: &CopyPlan) -> Vec<String> {
    let mut out: Vec<String> = plan
        .mappings
        .iter()
        .map(|m| {
            let src = match &m.source {
                MappingSource::File(s) | MappingSource::Dir(s) | MappingSource::Glob(s) => {
                    if s.is_empty() {
                        ".".to_string()
                    } else {
                        s.clone()
                    }
                }
                MappingSource::Parents { pivot, pattern } => format!("{pivot}/./{pattern}"),
            };
            format!("L{} {src} -> {}", m.line, m.container)
        })
        .collect();
    out.extend(
        plan.skipped
            .iter()
            .map(|s| format!("L{} skip {}", s.line, s.source)),
    );
    out
}

/// (image reference, working directory, environment)
type Image<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

fn images(entries: &[Image<'_>]) -> BTreeMap<String, ImageConfig> {
    entries
        .iter()
        .map(|(name, wd, env)| {
            let env = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (
                name.to_string(),
                ImageConfig {
                    working_dir: wd.to_string(),
                    env,
                    user: String::new(),
                },
            )
        })
        .collect()
}

#[test]
fn node_app_with_a_deps_stage() {
    let dockerfile = r#"# syntax=docker/dockerfile:1
ARG NODE_VERSION=22
FROM node:${NODE_VERSION}-alpine AS base
WORKDIR /usr/src/app

FROM base AS deps
COPY package.json package-lock.json ./
RUN npm ci

FROM deps AS dev
ENV NODE_ENV=development
COPY --chown=node:node . .
USER node
CMD ["npm", "run", "dev"]

FROM base AS prod
COPY --from=deps /usr/src/app/node_modules ./node_modules
COPY . .
CMD ["node", "server.js"]
"#;
    let files = [
        "package.json",
        "package-lock.json",
        "server.js",
        "src/routes/index.js",
        "node_modules/express/index.js",
        ".env",
        "README.md",
    ];
    let context: ContextList = files.iter().collect();
    let ignore = DockerIgnore::parse("node_modules\n.env\n*.md\n.git\n").unwrap();
    let options = BuildOptions {
        target: Some("dev".into()),
        images: images(&[("node:22-alpine", "", &[("NODE_VERSION", "22.11.0")])]),
        ..BuildOptions::default()
    };
    let plan = plan_copies(dockerfile, &options, &context, &ignore).unwrap();
    assert_eq!(
        lines(&plan),
        [
            "L7 package.json -> /usr/src/app/package.json",
            "L7 package-lock.json -> /usr/src/app/package-lock.json",
            "L12 . -> /usr/src/app",
        ]
    );
    assert_eq!(plan.user.as_deref(), Some("node"));
    assert_eq!(plan.mappings[2].chown.as_deref(), Some("node:node"));
    let scope = Scope::new(&plan, ignore).unwrap();
    assert_eq!(
        scope
            .host_to_container("src/routes/users.js", false)
            .as_deref(),
        Some("/usr/src/app/src/routes/users.js")
    );
    assert_eq!(scope.host_to_container(".env", false), None);
    assert_eq!(
        scope
            .container_to_host("/usr/src/app/src/gen.js")
            .as_deref(),
        Some("src/gen.js")
    );
    assert_eq!(
        scope.container_to_host("/usr/src/app/node_modules/x/y.js"),
        None
    );
    let owned: Vec<String> = owned_dirs(files).iter().map(|d| d.path.clone()).collect();
    assert_eq!(owned, ["node_modules"]);

    // The prod target: the --from copy is skipped, the context copy counts, dev's does not.
    let options = BuildOptions {
        target: Some("prod".into()),
        ..options
    };
    let ignore = DockerIgnore::parse("node_modules\n").unwrap();
    let plan = plan_copies(dockerfile, &options, &context, &ignore).unwrap();
    assert_eq!(lines(&plan), ["L18 . -> /usr/src/app", "L17 skip "]);
}

#[test]
fn python_app_with_requirements_first() {
    let dockerfile = "FROM python:3.12-slim\n\
        ENV PYTHONDONTWRITEBYTECODE=1 \\\n    APP_HOME=/code\n\
        WORKDIR $APP_HOME\n\
        COPY requirements.txt requirements-dev.txt ./\n\
        RUN pip install -r requirements.txt\n\
        COPY ./app ./app\n\
        COPY alembic.ini ./\n\
        COPY migrations/ ./migrations/\n\
        CMD [\"uvicorn\", \"app.main:app\"]\n";
    let files = [
        "requirements.txt",
        "requirements-dev.txt",
        "app/main.py",
        "app/models/user.py",
        "alembic.ini",
        "migrations/env.py",
        "tests/test_x.py",
    ];
    let context: ContextList = files.iter().collect();
    let ignore = DockerIgnore::parse("**/__pycache__\n.venv\n").unwrap();
    let options = BuildOptions {
        images: images(&[("python:3.12-slim", "", &[("LANG", "C.UTF-8")])]),
        ..BuildOptions::default()
    };
    let plan = plan_copies(dockerfile, &options, &context, &ignore).unwrap();
    assert_eq!(
        lines(&plan),
        [
            "L5 requirements.txt -> /code/requirements.txt",
            "L5 requirements-dev.txt -> /code/requirements-dev.txt",
            "L7 app -> /code/app",
            "L8 alembic.ini -> /code/alembic.ini",
            "L9 migrations -> /code/migrations",
        ]
    );
    let scope = Scope::new(&plan, ignore).unwrap();
    assert_eq!(scope.host_to_container("tests/test_y.py", false), None);
    assert_eq!(
        scope.host_to_container("app/__pycache__/main.cpython-312.pyc", false),
        None
    );
    assert_eq!(
        scope
            .container_to_host("/code/migrations/versions/001_init.py")
            .as_deref(),
        Some("migrations/versions/001_init.py")
    );
    assert_eq!(scope.container_to_host("/code/requirements.lock"), None);
}

#[test]
fn rust_multi_stage_builds_the_builder_target() {
    let dockerfile = "FROM rust:1.85 AS chef\nWORKDIR /src\n\
        FROM chef AS builder\nCOPY Cargo.toml Cargo.lock ./\nCOPY crates crates\nRUN cargo build --release\n\
        FROM debian:bookworm-slim\nCOPY --from=builder /src/target/release/app /usr/local/bin/app\nCMD [\"app\"]\n";
    let files = [
        "Cargo.toml",
        "Cargo.lock",
        "crates/app/Cargo.toml",
        "crates/app/src/main.rs",
        "target/debug/app",
    ];
    let context: ContextList = files.iter().collect();
    let ignore = DockerIgnore::parse("target\n").unwrap();
    let built = |target: Option<&str>| {
        let options = BuildOptions {
            target: target.map(str::to_string),
            ..BuildOptions::default()
        };
        lines(&plan_copies(dockerfile, &options, &context, &ignore).unwrap())
    };
    assert_eq!(
        built(Some("builder")),
        [
            "L4 Cargo.toml -> /src/Cargo.toml",
            "L4 Cargo.lock -> /src/Cargo.lock",
            "L5 crates -> /src/crates"
        ]
    );
    // The final stage copies nothing from the host: nothing to sync, and ferry says why.
    assert_eq!(built(None), ["L8 skip "]);
    let owned: Vec<String> = owned_dirs(files).iter().map(|d| d.path.clone()).collect();
    assert_eq!(owned, ["crates/app/target", "target"]);
}

#[test]
fn rails_app_with_gemfile_and_an_archive() {
    let dockerfile = "FROM ruby:3.3\n\
        ARG RAILS_ROOT=/rails\n\
        WORKDIR ${RAILS_ROOT}\n\
        COPY Gemfile Gemfile.lock ./\n\
        RUN bundle install\n\
        ADD vendor/assets.tar.gz /rails/vendor/\n\
        ADD https://example.com/tool /usr/local/bin/tool\n\
        COPY . .\n\
        COPY <<-EOT /rails/config/boot-note.txt\n\
        \tgenerated at build\n\
        \tEOT\n";
    let files = [
        "Gemfile",
        "Gemfile.lock",
        "app/models/user.rb",
        "config/routes.rb",
        "vendor/assets.tar.gz",
        "log/development.log",
        "tmp/cache/x",
    ];
    let context: ContextList = files.iter().collect();
    let ignore = DockerIgnore::parse("log/*\ntmp/*\n!tmp/.keep\n").unwrap();
    let plan = plan_copies(dockerfile, &BuildOptions::default(), &context, &ignore).unwrap();
    assert_eq!(
        lines(&plan),
        [
            "L4 Gemfile -> /rails/Gemfile",
            "L4 Gemfile.lock -> /rails/Gemfile.lock",
            "L8 . -> /rails",
            "L6 skip vendor/assets.tar.gz",
            "L7 skip https://example.com/tool",
            "L9 skip <<heredoc",
        ]
    );
    let scope = Scope::new(&plan, ignore).unwrap();
    assert_eq!(
        scope
            .container_to_host("/rails/db/migrate/001_create_users.rb")
            .as_deref(),
        Some("db/migrate/001_create_users.rb")
    );
    assert_eq!(scope.container_to_host("/rails/log/development.log"), None);
    assert_eq!(
        scope.container_to_host("/rails/tmp/.keep").as_deref(),
        Some("tmp/.keep")
    );
    let owned: Vec<String> = owned_dirs(files).iter().map(|d| d.describe()).collect();
    assert_eq!(owned, [".bundle (Gemfile)", "vendor/bundle (Gemfile)"]);
}
