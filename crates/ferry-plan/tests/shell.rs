//! BuildKit's shell-word processing against BuildKit's own test data.

use ferry_plan::shell::{Env, Lex, split_words};

#[test]
fn buildkit_env_var_vectors() {
    let env: Env = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .into_iter()
    .collect();
    let lex = Lex::new('\\');
    let mut failures = Vec::new();
    let mut count = 0;
    for line in include_str!("vectors/buildkit_envVarTest.txt").lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').collect();
        assert_eq!(fields.len(), 3, "bad vector line {line:?}");
        let (platform, source, expected) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        if platform == "W" {
            continue;
        }
        count += 1;
        let got = match lex.process_word(source, &env) {
            Ok(w) => w,
            Err(_) => "error".to_string(),
        };
        if got != expected {
            failures.push(format!("{source:?}: want {expected:?}, got {got:?}"));
        }
    }
    assert!(count > 200, "only {count} vectors read");
    assert!(
        failures.is_empty(),
        "{} of {count} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn buildkit_words_vectors() {
    // BuildKit's test loops over two modes but reads the file once, so only the plain mode
    // ever runs against these vectors: that one is the fact.
    {
        let raw = false;
        let lex = Lex::new('\\');
        let mut env = Env::new();
        let mut count = 0;
        for line in include_str!("vectors/buildkit_wordsTest.txt").lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix("ENV ") {
                let rest = rest.trim_start_matches(' ');
                let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
                env.set(k, v);
                continue;
            }
            let (test, expected) = line.split_once('|').expect("one | per line");
            let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
            let got = lex
                .process_words(test.trim(), &env)
                .unwrap_or_else(|_| vec!["error".to_string()]);
            assert_eq!(got, expected, "{test:?} (raw quotes and skip-unset: {raw})");
            count += 1;
        }
        assert!(count > 20);
    }
}

#[test]
fn buildkit_process_with_matches_cases() {
    // lex_test.go TestProcessWithMatches and TestShellParserMandatoryEnvVars: (input, env, want).
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<&'a str>);
    let cases: &[Case<'_>] = &[
        ("x", &[("DUMMY", "dummy")], Some("x")),
        ("x ${UNUSED}", &[("DUMMY", "dummy")], Some("x ")),
        ("x ${FOO}", &[("FOO", "y")], Some("x y")),
        (
            "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
            &[("FOO", "xxx"), ("BAR", "")],
            Some("xxx  ccc"),
        ),
        (
            "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
            &[("FOO", "xxx"), ("BAR", "")],
            Some("xxx bbb ccc"),
        ),
        ("${FOO:-}", &[("FOO", "xxx"), ("BAR", "")], Some("xxx")),
        ("${FOO:-}", &[], Some("")),
        (
            "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
            &[("FOO", "xxx"), ("BAR", "")],
            Some("aaa bbb "),
        ),
        (
            "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
            &[("FOO", "xxx"), ("BAR", "")],
            Some("aaa  "),
        ),
        ("${FOO?aaa}", &[("FOO", "xxx"), ("BAR", "")], Some("xxx")),
        ("${BAR?bbb}", &[("FOO", "xxx"), ("BAR", "")], Some("")),
        ("${BAZ?ccc}", &[("FOO", "xxx"), ("BAR", "")], None),
        ("${FOO:?aaa}", &[("FOO", "xxx"), ("BAR", "")], Some("xxx")),
        ("${BAR:?bbb}", &[("FOO", "xxx"), ("BAR", "")], None),
        ("${BAZ:?ccc}", &[("FOO", "xxx"), ("BAR", "")], None),
        ("${BAZ:?}", &[("FOO", "xxx"), ("BAR", "")], None),
        ("${FOO=aaa}", &[("FOO", "xxx"), ("BAR", "")], None),
        ("${FOO=:aaa}", &[("FOO", "xxx"), ("BAR", "")], None),
        ("${FOO=}", &[], None),
        (
            "${FOO#()[]{\\}^$.\\*\\?|\\\\}",
            &[("FOO", "()[]{}^$.*?|\\x")],
            Some("x"),
        ),
        ("${FOO%%\\**}", &[("FOO", "xx**")], Some("xx")),
        ("${FOO#*x*y}", &[("FOO", "xxyy")], Some("y")),
        ("${FOO#*}", &[("FOO", "xxyy")], Some("xxyy")),
        ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "x")], Some("xyy")),
        ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "")], Some("xxyy")),
        ("${FOO#}", &[("FOO", "xxyy")], Some("xxyy")),
        ("${FOO##*x}", &[("FOO", "xxyy")], Some("yy")),
        ("${FOO##}", &[("FOO", "xxyy")], Some("xxyy")),
        ("${FOO#?\\?}", &[("FOO", "???y")], Some("?y")),
        (
            "${ABC:-.}${FOO%x}${ABC:-.}",
            &[("FOO", "xxyy")],
            Some(".xxyy."),
        ),
        ("${FOO%%\\**\\*}", &[("FOO", "a***yy*")], Some("a")),
        ("${FOO%}", &[("FOO", "xxyy")], Some("xxyy")),
        (
            "${FOO%%$BAR}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("xxyy"),
        ),
        ("${FOO:#}", &[], None),
        ("${FOO:##}", &[], None),
        ("${FOO:%}", &[], None),
        ("${FOO:%%}", &[], None),
        (
            "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
            &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")],
            Some("/foo.*/*.txt - /foo..*.txt"),
        ),
        (
            "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
            &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
            Some("/tmp/bar.txt - /bar.txt"),
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
            &[
                ("FOO", "/a/foo/b/c.txt"),
                ("NEEDLE", "/?/"),
                ("REPLACEMENT", "/"),
            ],
            Some("/foo/b/c.txt - /foo/c.txt"),
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT}",
            &[
                ("FOO", "http://google.de"),
                ("NEEDLE", "http://"),
                ("REPLACEMENT", "https://"),
            ],
            Some("https://google.de"),
        ),
        (
            "${FOO//\\//\\/}",
            &[("FOO", "/tmp/foo.txt")],
            Some("\\/tmp\\/foo.txt"),
        ),
        (
            "${FOO/$BAR/ww}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("wwxxyy"),
        ),
        ("${FOO//ww}", &[("FOO", "xxyy")], None),
        ("${FOO//}", &[("FOO", "xxyy")], None),
        ("${FOO///}", &[("FOO", "xxyy")], Some("xxyy")),
        ("${FOO///}", &[], Some("")),
        (
            "${VAR:?message here$ARG}",
            &[("VAR", "plain"), ("ARG", "x")],
            Some("plain"),
        ),
        (
            "${VAR:?message here$ARG}",
            &[("VAR", ""), ("ARG", "x")],
            None,
        ),
        (
            "${VAR?message here$ARG}",
            &[("VAR", ""), ("ARG", "x")],
            Some(""),
        ),
        ("${VAR?message here$ARG}", &[("ARG", "x")], None),
        (
            "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
            &[
                ("VERSION", "v1.2.3"),
                ("TARGETOS", "linux"),
                ("TARGETARCH", "arm"),
                ("TARGETVARIANT", "v7"),
            ],
            Some("something-v1.2.3.linux-arm-v7.tar.gz"),
        ),
        (
            "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
            &[
                ("VERSION", "v1.2.3"),
                ("TARGETOS", "linux"),
                ("TARGETARCH", "arm64"),
                ("TARGETVARIANT", ""),
            ],
            Some("something-v1.2.3.linux-arm64.tar.gz"),
        ),
    ];
    let lex = Lex::new('\\');
    for (input, vars, want) in cases {
        let env: Env = vars.iter().copied().collect();
        let got = lex.process_word(input, &env).ok();
        assert_eq!(got.as_deref(), *want, "{input:?} with {vars:?}");
    }
    let err = lex
        .process_word(
            "${VAR:?message here$ARG}",
            &[("ARG", "x")].into_iter().collect(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("message herex"), "{err}");
}

#[test]
fn backtick_escape_directive() {
    let env: Env = [("A", "1")].into_iter().collect();
    let lex = Lex::new('`');
    assert_eq!(lex.process_word("C:\\dir\\$A", &env).unwrap(), "C:\\dir\\1");
    assert_eq!(lex.process_word("`$A", &env).unwrap(), "$A");
}

#[test]
fn arg_and_env_lines_split_like_buildkit() {
    let cases: &[(&str, &[&str])] = &[
        ("a=1 b=2", &["a=1", "b=2"]),
        ("a=\"x y\" b", &["a=\"x y\"", "b"]),
        ("a='x \\' y'", &["a='x \\'", "y'"]),
        ("a=x\\ y", &["a=x\\ y"]),
        ("  spaced   out  ", &["spaced", "out"]),
        ("a=\"\"", &["a=\"\""]),
        ("trailing\\", &["trailing"]),
    ];
    for (line, want) in cases {
        assert_eq!(split_words(line, '\\'), *want, "{line:?}");
    }
}
