//! The COPY/ADD mapping of the built stage, as one-line table cases: a Dockerfile (lines joined
//! with `;` for brevity where it reads well), a context, and the mappings it yields.

use std::collections::BTreeMap;

use ferry_plan::{
    BuildOptions, ContextList, CopyPlan, DockerIgnore, ImageConfig, MappingSource, PlanError,
    plan_copies,
};

const CONTEXT: &[&str] = &[
    "package.json",
    "package-lock.json",
    "app.py",
    "README.md",
    "src/main.js",
    "src/lib/util.js",
    "config/a.yml",
    "config/b.yml",
    "config/c.txt",
    "a",
    "b",
    "vendor.tar.gz",
    "docs/",
];

fn plan_with(
    dockerfile: &str,
    options: &BuildOptions,
    ignore: &str,
) -> Result<CopyPlan, PlanError> {
    let context: ContextList = CONTEXT.iter().collect();
    let ignore = DockerIgnore::parse(ignore).expect("valid ignore file");
    plan_copies(dockerfile, options, &context, &ignore)
}

/// Mappings as `kind source -> container` lines, skips as `skip source: reason`.
fn summary(plan: &CopyPlan) -> Vec<String> {
    let mut out: Vec<String> = plan
        .mappings
        .iter()
        .map(|m| {
            let (kind, src) = match &m.source {
                MappingSource::File(s) => ("file", s.clone()),
                MappingSource::Dir(s) => (
                    "dir",
                    if s.is_empty() {
                        ".".to_string()
                    } else {
                        s.clone()
                    },
                ),
                MappingSource::Glob(s) => (if m.into_dir { "glob" } else { "glob1" }, s.clone()),
                MappingSource::Parents { pivot, pattern } => {
                    ("parents", format!("{pivot}/./{pattern}"))
                }
            };
            let mut line = format!("{kind} {src} -> {}", m.container);
            if let Some(c) = &m.chown {
                line.push_str(&format!(" chown={c}"));
            }
            if !m.excludes.is_empty() {
                line.push_str(&format!(" exclude={}", m.excludes.join(",")));
            }
            line
        })
        .collect();
    out.extend(
        plan.skipped
            .iter()
            .map(|s| format!("skip {}: {}", s.source, s.reason)),
    );
    out
}

fn run(dockerfile: &str) -> Vec<String> {
    let df = dockerfile.replace(" ; ", "\n");
    summary(
        &plan_with(&df, &BuildOptions::default(), "")
            .unwrap_or_else(|e| panic!("{dockerfile}: {e}")),
    )
}

#[test]
fn copy_table() {
    let cases: &[(&str, &[&str])] = &[
        // Destinations: absolute, trailing slash, WORKDIR-relative, no WORKDIR.
        (
            "FROM scratch ; COPY app.py /srv/app.py",
            &["file app.py -> /srv/app.py"],
        ),
        (
            "FROM scratch ; COPY app.py /srv/",
            &["file app.py -> /srv/app.py"],
        ),
        ("FROM scratch ; COPY app.py /srv", &["file app.py -> /srv"]),
        ("FROM scratch ; COPY app.py .", &["file app.py -> /app.py"]),
        ("FROM scratch ; COPY app.py x", &["file app.py -> /x"]),
        (
            "FROM scratch ; WORKDIR /app ; COPY app.py .",
            &["file app.py -> /app/app.py"],
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY app.py ./",
            &["file app.py -> /app/app.py"],
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY app.py main.py",
            &["file app.py -> /app/main.py"],
        ),
        // A destination that is a known directory (WORKDIR made it) takes the file inside.
        (
            "FROM scratch ; WORKDIR /app ; WORKDIR / ; COPY app.py /app",
            &["file app.py -> /app/app.py"],
        ),
        (
            "FROM scratch ; WORKDIR /srv/app ; WORKDIR / ; COPY app.py /srv",
            &["file app.py -> /srv/app.py"],
        ),
        // Relative WORKDIR chains.
        (
            "FROM scratch ; WORKDIR /a ; WORKDIR b ; WORKDIR ../c ; COPY app.py .",
            &["file app.py -> /a/c/app.py"],
        ),
        (
            "FROM scratch ; WORKDIR rel ; COPY app.py .",
            &["file app.py -> /rel/app.py"],
        ),
        // Directory sources copy their contents.
        ("FROM scratch ; WORKDIR /app ; COPY . .", &["dir . -> /app"]),
        ("FROM scratch ; COPY src /app/src", &["dir src -> /app/src"]),
        ("FROM scratch ; COPY src/ /app/", &["dir src -> /app"]),
        (
            "FROM scratch ; COPY ./src/../src /code",
            &["dir src -> /code"],
        ),
        // Several sources, globs.
        (
            "FROM scratch ; COPY a b /tasks/",
            &["file a -> /tasks/a", "file b -> /tasks/b"],
        ),
        (
            "FROM scratch ; COPY package*.json ./",
            &["glob package*.json -> /"],
        ),
        (
            "FROM scratch ; WORKDIR /app ; COPY config/*.yml ./config/",
            &["glob config/*.yml -> /app/config"],
        ),
        (
            "FROM scratch ; COPY config/?.yml /c.yml",
            &["glob1 config/?.yml -> /c.yml"],
        ),
        (
            "FROM scratch ; COPY [\"a\", \"b\", \"/json form/\"]",
            &["file a -> /json form/a", "file b -> /json form/b"],
        ),
        (
            "FROM scratch ; COPY a \\\n  b /cont/",
            &["file a -> /cont/a", "file b -> /cont/b"],
        ),
        // Flags.
        (
            "FROM scratch ; COPY --chown=1000:1000 src /app",
            &["dir src -> /app chown=1000:1000"],
        ),
        (
            "FROM scratch ; ARG U=node ; COPY --chown=$U:$U app.py /app/",
            &["file app.py -> /app/app.py chown=node:node"],
        ),
        (
            "FROM scratch ; COPY --exclude=*.md --exclude=docs . /app",
            &["dir . -> /app exclude=*.md,docs"],
        ),
        (
            "FROM scratch ; COPY --parents src/lib/util.js /dst/",
            &["parents /./src/lib/util.js -> /dst"],
        ),
        (
            "FROM scratch ; COPY --parents ./src/./lib /dst/",
            &["parents src/./lib -> /dst"],
        ),
        (
            "FROM scratch ; COPY --link --chmod=755 app.py /bin/",
            &["file app.py -> /bin/app.py"],
        ),
        // Not host files.
        (
            "FROM scratch AS b ; FROM scratch ; COPY --from=b /x /y",
            &[
                "skip : COPY --from=b copies from another stage or image, not from the build context",
            ],
        ),
        (
            "FROM scratch ; ADD https://example.com/x.tgz /opt/",
            &["skip https://example.com/x.tgz: ADD of a URL: not from the build context"],
        ),
        (
            "FROM scratch ; ADD git@github.com:moby/buildkit.git /bk",
            &[
                "skip git@github.com:moby/buildkit.git: ADD of a git repository: not from the build context",
            ],
        ),
        (
            "FROM scratch ; ADD vendor.tar.gz /opt/",
            &[
                "skip vendor.tar.gz: ADD unpacks a local archive: the image holds its contents, not this file",
            ],
        ),
        (
            "FROM scratch ; ADD --unpack=false vendor.tar.gz /opt/",
            &["file vendor.tar.gz -> /opt/vendor.tar.gz"],
        ),
        (
            "FROM scratch ; ADD app.py /srv/",
            &["file app.py -> /srv/app.py"],
        ),
        (
            "FROM scratch ; COPY <<EOF /etc/motd\nhello\nEOF\nCOPY app.py /",
            &[
                "file app.py -> /app.py",
                "skip <<heredoc: COPY of a heredoc writes inline text, not a host file",
            ],
        ),
        (
            "FROM scratch ; COPY missing.txt /x",
            &["skip missing.txt: not in the build context (the build would fail here)"],
        ),
    ];
    for (dockerfile, want) in cases {
        assert_eq!(run(dockerfile), *want, "{dockerfile}");
    }
}

#[test]
fn arg_and_env_table() {
    let cases: &[(&str, &[&str])] = &[
        (
            "FROM scratch ; ARG DIR=/srv ; COPY app.py $DIR/",
            &["file app.py -> /srv/app.py"],
        ),
        (
            "FROM scratch ; ARG DIR ; COPY app.py ${DIR:-/fallback}/",
            &["file app.py -> /fallback/app.py"],
        ),
        (
            "FROM scratch ; ARG DIR= ; COPY app.py ${DIR-/unset}/x/",
            &["file app.py -> /x/app.py"],
        ),
        (
            "FROM scratch ; ARG DIR= ; COPY app.py ${DIR:-/empty}/",
            &["file app.py -> /empty/app.py"],
        ),
        (
            "FROM scratch ; ARG ON=1 ; COPY app.py /base${ON:+/on}/",
            &["file app.py -> /base/on/app.py"],
        ),
        (
            "FROM scratch ; ARG ON ; COPY app.py /base${ON+/on}/",
            &["file app.py -> /base/app.py"],
        ),
        (
            "FROM scratch ; ENV APP=/app ; WORKDIR $APP ; COPY . .",
            &["dir . -> /app"],
        ),
        (
            "FROM scratch ; ENV APP /opt/my app ; COPY app.py \"$APP/\"",
            &["file app.py -> /opt/my app/app.py"],
        ),
        (
            "FROM scratch ; ENV A=/a B=$A/b ; COPY app.py $B/",
            &["file app.py -> /b/app.py"],
        ),
        (
            "FROM scratch ; ENV A=/a ; ENV B=$A/b ; COPY app.py $B/",
            &["file app.py -> /a/b/app.py"],
        ),
        (
            "FROM scratch ; ARG D=/one ; ENV D=/two ; COPY app.py $D/",
            &["file app.py -> /two/app.py"],
        ),
        (
            "FROM scratch ; COPY app.py '/$literal/'",
            &["file app.py -> /$literal/app.py"],
        ),
        // Shell form splits on whitespace before the lexer runs, escaped or not (BuildKit's
        // parseStringsWhitespaceDelimited); the JSON form keeps spaces.
        (
            "FROM scratch ; COPY app.py /a\\ b/",
            &["file app.py -> /b/app.py", "file a -> /b/a"],
        ),
        (
            "FROM scratch ; COPY [\"app.py\", \"/a b/\"]",
            &["file app.py -> /a b/app.py"],
        ),
        (
            "FROM scratch ; ARG SRC=src ; COPY ${SRC} /code",
            &["dir src -> /code"],
        ),
        (
            "FROM scratch ; ARG PAT=*.yml ; COPY config/${PAT} /c/",
            &["glob config/*.yml -> /c"],
        ),
        // Global ARGs are for FROM; a stage sees one only after declaring it.
        (
            "ARG V=/g ; FROM scratch ; COPY app.py ${V:-/none}/",
            &["file app.py -> /none/app.py"],
        ),
        (
            "ARG V=/g ; FROM scratch ; ARG V ; COPY app.py $V/",
            &["file app.py -> /g/app.py"],
        ),
        (
            "FROM scratch ; ARG TARGETARCH ; COPY app.py /$TARGETARCH/",
            &["file app.py -> /amd64/app.py"],
        ),
    ];
    for (dockerfile, want) in cases {
        assert_eq!(run(dockerfile), *want, "{dockerfile}");
    }
}

#[test]
fn build_args_override_defaults() {
    let df = "ARG BASE=scratch\nFROM ${BASE}\nARG DEST=/default\nARG UNDECLARED_IN_STAGE\nCOPY app.py $DEST/\n";
    let options = BuildOptions {
        build_args: BTreeMap::from([("DEST".to_string(), "/given".to_string())]),
        ..BuildOptions::default()
    };
    assert_eq!(
        summary(&plan_with(df, &options, "").unwrap()),
        ["file app.py -> /given/app.py"]
    );
}

#[test]
fn stages_target_and_from_chains() {
    let df = "FROM scratch AS deps\nWORKDIR /app\nCOPY package.json ./\n\
              FROM deps AS dev\nCOPY src ./src\n\
              FROM scratch AS other\nCOPY README.md /readme\n\
              FROM dev AS test\nCOPY config/*.yml ./config/\n\
              FROM scratch\nCOPY --from=dev /app /app\nCOPY app.py /app/\n";
    let target = |t: Option<&str>| {
        let options = BuildOptions {
            target: t.map(str::to_string),
            ..BuildOptions::default()
        };
        let plan = plan_with(df, &options, "").unwrap();
        (plan.stage.clone(), summary(&plan))
    };
    // The last stage: its own COPYs only; --from is skipped.
    let (stage, got) = target(None);
    assert_eq!(stage, "4");
    assert_eq!(
        got,
        [
            "file app.py -> /app/app.py",
            "skip : COPY --from=dev copies from another stage or image, not from the build context"
        ]
    );
    // A target follows FROM <stage> chains: ancestors count, siblings do not.
    let (stage, got) = target(Some("test"));
    assert_eq!(stage, "test");
    assert_eq!(
        got,
        [
            "file package.json -> /app/package.json",
            "dir src -> /app/src",
            "glob config/*.yml -> /app/config"
        ]
    );
    assert_eq!(
        target(Some("DEV")).1,
        [
            "file package.json -> /app/package.json",
            "dir src -> /app/src"
        ]
    );
    let err = plan_with(
        df,
        &BuildOptions {
            target: Some("prod".into()),
            ..BuildOptions::default()
        },
        "",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Dockerfile has no stage named \"prod\" (stages: deps, dev, other, test, 4)"
    );
}

#[test]
fn image_working_dir_and_env_apply_without_workdir() {
    let df = "FROM node:22\nCOPY package.json .\nCOPY app.py $HOME/\nUSER $USERNAME\n";
    let image = ImageConfig {
        working_dir: "/usr/src/app".into(),
        env: vec![
            ("HOME".into(), "/home/node".into()),
            ("USERNAME".into(), "node".into()),
        ],
        user: String::new(),
    };
    let options = BuildOptions {
        images: BTreeMap::from([("node:22".into(), image)]),
        ..BuildOptions::default()
    };
    let plan = plan_with(df, &options, "").unwrap();
    assert_eq!(
        summary(&plan),
        [
            "file package.json -> /usr/src/app/package.json",
            "file app.py -> /home/node/app.py"
        ]
    );
    assert_eq!(plan.user.as_deref(), Some("node"));
    assert_eq!(plan.workdir, "/usr/src/app");
}

#[test]
fn dockerignored_file_source_is_skipped() {
    let plan = plan_with(
        "FROM scratch\nCOPY README.md app.py /d/\n",
        &BuildOptions::default(),
        "*.md\n",
    )
    .unwrap();
    assert_eq!(
        summary(&plan),
        [
            "file app.py -> /d/app.py",
            "skip README.md: left out of the build context by .dockerignore"
        ]
    );
}

#[test]
fn escape_directive_changes_the_escape_character() {
    let df = "# escape=`\nFROM scratch\nCOPY app.py C:\\app\\\n";
    assert_eq!(
        summary(&plan_with(df, &BuildOptions::default(), "").unwrap()),
        ["file app.py -> /C:\\app\\"]
    );
}

#[test]
fn errors_name_the_line() {
    let bad = |df: &str| {
        plan_with(df, &BuildOptions::default(), "")
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        bad("FROM scratch\n\nCOPY app.py ${DEST:?set_DEST}\n"),
        "Dockerfile line 3: cannot expand \"${DEST:?set_DEST}\": DEST: set_DEST"
    );
    assert_eq!(
        bad("FROM scratch\nCOPY https://x/y /z\n"),
        "Dockerfile line 2: COPY cannot copy a URL"
    );
    assert_eq!(
        bad("FROM scratch\nCOPY --exclude=! . /z\n"),
        "bad .dockerignore pattern \"!\": illegal exclusion pattern \"!\""
    );
    assert!(
        bad("FROM scratch\nCOPY\n").starts_with("Dockerfile line 2: "),
        "{}",
        bad("FROM scratch\nCOPY\n")
    );
    assert_eq!(
        bad("# just a comment\n"),
        "Dockerfile: expected at least one FROM instruction"
    );
}
