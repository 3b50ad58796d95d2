//! Names across filesystems (issue 12, part 4), end to end on real filesystems: alpha is this
//! machine's (case-sensitive, names as given), beta is either exFAT through Debian's
//! `exfat-fuse` (case-insensitive, case-preserving) or `tests/fuse/nfd.py`, a FUSE stand-in
//! that stores and hands back every name decomposed (NFD), as macOS volumes do.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const NFC: &str = "caf\u{e9}.txt";
const NFD: &str = "cafe\u{301}.txt";
const DIR_NFC: &str = "r\u{e9}sum\u{e9}";
const DIR_NFD: &str = "re\u{301}sume\u{301}";

/// A filesystem mounted on the fixture's beta; unmounted (and its loop device freed) on drop.
struct Mount {
    dir: PathBuf,
    child: Option<Child>,
    loop_dev: Option<String>,
}

impl Drop for Mount {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = Command::new("fusermount")
                .arg("-u")
                .arg(&self.dir)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok || !mounted(&self.dir) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(dev) = &self.loop_dev {
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
    }
}

fn dev(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p).map_or(0, |m| m.dev())
}

fn mounted(dir: &Path) -> bool {
    dir.parent().is_some_and(|parent| dev(dir) != dev(parent))
}

/// Waits (10 s at most) until `dir` is a mount point.
fn wait_mounted(dir: &Path, what: &str, child: Option<&mut Child>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut child = child;
    while !mounted(dir) {
        if let Some(c) = child.as_deref_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = c.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!("{what} exited ({status}) before mounting: {err}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not mount within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fails (with the fix) unless `cond`.
#[track_caller]
fn need(cond: bool, what: &str) {
    assert!(
        cond,
        "this test needs {what}: run scripts/test.sh (it installs exfat-fuse, exfatprogs, fuse3 and \
         python3-fusepy) or apt-get install them; it runs as root (mounts, loop devices)"
    );
}

fn nfd_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuse/nfd.py")
}

/// Mounts the NFD stand-in on the fixture's beta (its files live in `root/nfd-backing`).
fn mount_nfd(fx: &Fixture) -> Mount {
    need(Path::new("/dev/fuse").exists(), "/dev/fuse");
    let fusepy = Command::new("/usr/bin/python3")
        .args(["-c", "import fusepy"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    need(
        fusepy,
        "Debian's python3-fusepy (/usr/bin/python3 -c 'import fusepy')",
    );
    let backing = fx.root.join("nfd-backing");
    fs::create_dir(&backing).expect("backing dir");
    let mut child = Command::new("/usr/bin/python3")
        .arg(nfd_script())
        .arg(&backing)
        .arg(&fx.beta)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tests/fuse/nfd.py");
    wait_mounted(&fx.beta, "tests/fuse/nfd.py", Some(&mut child));
    Mount {
        dir: fx.beta.clone(),
        child: Some(child),
        loop_dev: None,
    }
}

/// Makes a 64 MiB exFAT image and mounts it (through a loop device) on the fixture's beta.
fn mount_exfat(fx: &Fixture) -> Mount {
    need(is_root(), "root");
    for tool in ["mkfs.exfat", "mount.exfat-fuse", "losetup", "fusermount"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        need(found, tool);
    }
    let img = fx.root.join("exfat.img");
    fs::File::create(&img)
        .and_then(|f| f.set_len(64 << 20))
        .expect("exfat image");
    let out = Command::new("mkfs.exfat")
        .arg(&img)
        .output()
        .expect("mkfs.exfat");
    assert!(out.status.success(), "mkfs.exfat failed: {out:?}");
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()
        .expect("losetup");
    assert!(out.status.success(), "losetup -f --show failed: {out:?}");
    let loop_dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut m = Mount {
        dir: fx.beta.clone(),
        child: None,
        loop_dev: Some(loop_dev.clone()),
    };
    let out = Command::new("mount.exfat-fuse")
        .arg(&loop_dev)
        .arg(&fx.beta)
        .output()
        .expect("mount.exfat-fuse");
    assert!(out.status.success(), "mount.exfat-fuse failed: {out:?}");
    wait_mounted(&fx.beta, "mount.exfat-fuse", None);
    m.dir = fx.beta.clone();
    m
}

/// The names in `dir`, sorted (as the filesystem hands them back).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("UTF-8 name")
        })
        .filter(|n| !n.starts_with(".ferry"))
        .collect();
    v.sort();
    v
}

/// Actions of the run's `change` events, as `action path`.
fn actions(run: &Run) -> Vec<String> {
    run.events("change")
        .iter()
        .map(|e| format!("{} {}", e["action"], e["path"]))
        .collect()
}

fn errors(run: &Run) -> Vec<String> {
    run.events("error").iter().map(|e| e.to_string()).collect()
}

/// A composed name synced to a decomposing volume is made there once; later runs see the
/// volume's decomposed spelling as the same file and do nothing; edits go both ways.
#[test]
fn nfd_volume_gets_composed_names_once_and_never_again() {
    let fx = Fixture::new();
    let _m = mount_nfd(&fx);
    write(&fx.a(NFC), "one\n");
    write(&fx.a(&format!("{DIR_NFC}/inner.txt")), "inner\n");
    let run = fx.once(&[]);
    run.expect_code(0);
    assert!(errors(&run).is_empty(), "{run}");
    // The volume hands the names back decomposed, the content is there.
    assert_eq!(names(&fx.beta), vec![NFD.to_owned(), DIR_NFD.to_owned()]);
    assert_eq!(read(&fx.b(NFD)), b"one\n");
    assert_eq!(read(&fx.b(&format!("{DIR_NFD}/inner.txt"))), b"inner\n");
    for round in 0..2 {
        let again = fx.once(&[]);
        again.expect_code(0);
        assert!(
            actions(&again).is_empty() && errors(&again).is_empty(),
            "run {round} after the first sync changed something:\n{again}"
        );
    }
    assert_eq!(
        names(&fx.alpha),
        vec![NFC.to_owned(), DIR_NFC.to_owned()],
        "alpha got a second spelling"
    );
    // An edit on alpha reaches beta's (decomposed) file.
    write(&fx.a(NFC), "two\n");
    let run = fx.once(&[]);
    run.expect_code(0);
    assert_eq!(actions(&run).len(), 1, "{run}");
    assert_eq!(read(&fx.b(NFD)), b"two\n");
    // An edit on beta comes back to alpha's composed file, and alpha keeps one spelling.
    write(&fx.b(&format!("{DIR_NFD}/inner.txt")), "from beta\n");
    let run = fx.once(&[]);
    run.expect_code(0);
    assert!(errors(&run).is_empty(), "{run}");
    assert_eq!(read(&fx.a(&format!("{DIR_NFC}/inner.txt"))), b"from beta\n");
    assert_eq!(names(&fx.alpha), vec![NFC.to_owned(), DIR_NFC.to_owned()]);
    // A deletion on beta, under the volume's spelling, deletes alpha's file.
    fs::remove_file(fx.b(NFD)).expect("remove on beta");
    let run = fx.once(&[]);
    run.expect_code(0);
    assert!(!fx.a(NFC).exists(), "{run}");
    assert_eq!(names(&fx.alpha), vec![DIR_NFC.to_owned()]);
}

/// Renaming a file on alpha from its composed to its decomposed spelling is no change at all:
/// not a delete plus a create on beta (an ordinary directory, and the decomposing volume).
#[test]
fn normalization_only_rename_is_not_delete_plus_create() {
    for nfd_beta in [false, true] {
        let fx = Fixture::new();
        let _m = nfd_beta.then(|| mount_nfd(&fx));
        write(&fx.a(NFC), "same\n");
        fx.once(&[]).expect_code(0);
        fs::rename(fx.a(NFC), fx.a(NFD)).expect("rename on alpha");
        let run = fx.once(&[]);
        run.expect_code(0);
        assert!(
            actions(&run).is_empty() && errors(&run).is_empty(),
            "nfd beta {nfd_beta}: a normalization-only rename changed something:\n{run}"
        );
        let beta_names = names(&fx.beta);
        assert_eq!(beta_names.len(), 1, "nfd beta {nfd_beta}: {beta_names:?}");
        assert_eq!(read(&fx.beta.join(&beta_names[0])), b"same\n");
        // The file is still one file: an edit on alpha's new spelling reaches beta.
        write(&fx.a(NFD), "edited\n");
        let run = fx.once(&[]);
        run.expect_code(0);
        assert!(errors(&run).is_empty(), "{run}");
        assert_eq!(read(&fx.beta.join(&beta_names[0])), b"edited\n");
        assert_eq!(names(&fx.beta).len(), 1);
        assert_eq!(names(&fx.alpha), vec![NFD.to_owned()]);
        let run = fx.once(&[]);
        assert!(actions(&run).is_empty(), "{run}");
    }
}

/// Two files on alpha whose names differ only in normalization cannot both live on the
/// decomposing volume: reported there, neither placed, alpha's intact, nothing retried.
#[test]
fn nfd_volume_reports_two_spellings_it_cannot_hold() {
    let fx = Fixture::new();
    let _m = mount_nfd(&fx);
    write(&fx.a(NFC), "composed\n");
    write(&fx.a(NFD), "decomposed\n");
    write(&fx.a("plain.txt"), "plain\n");
    for round in 0..2 {
        let run = fx.once(&[]);
        run.expect_code(0);
        for n in [NFC, NFD] {
            assert!(
                run.events("problem")
                    .iter()
                    .any(|e| e["side"] == "beta" && e["path"] == n),
                "round {round}: no problem reported on beta for {n:?}\n{run}"
            );
        }
        assert!(errors(&run).is_empty(), "round {round}: {run}");
        assert_eq!(names(&fx.beta), vec!["plain.txt".to_owned()], "{run}");
        assert_eq!(read(&fx.a(NFC)), b"composed\n");
        assert_eq!(read(&fx.a(NFD)), b"decomposed\n");
    }
}

/// `Readme` and `README` on alpha cannot both live on exFAT: a problem reported on beta,
/// nothing overwritten, alpha's two files intact, no retried error; the rest syncs.
#[test]
fn exfat_case_pair_is_reported_never_overwritten() {
    let fx = Fixture::new();
    let _m = mount_exfat(&fx);
    write(&fx.a("Readme"), "mixed\n");
    write(&fx.a("README"), "upper\n");
    write(&fx.a("docs/Guide.md"), "guide\n");
    write(&fx.a("docs/guide.md"), "lower guide\n");
    write(&fx.a("other.txt"), "other\n");
    let mut last = None;
    for round in 0..2 {
        let run = fx.once(&[]);
        for p in ["Readme", "README", "docs/Guide.md", "docs/guide.md"] {
            assert!(
                run.events("problem")
                    .iter()
                    .any(|e| e["side"] == "beta" && e["path"] == p),
                "round {round}: no problem reported on beta for {p}\n{run}"
            );
            assert!(
                run.changes_at(p).is_empty(),
                "round {round}: {p} was changed\n{run}"
            );
            assert!(
                !run.events("error")
                    .iter()
                    .any(|e| e["path"].as_str().is_some_and(|q| q == p)),
                "round {round}: an error (retried) at {p}\n{run}"
            );
        }
        assert_eq!(read(&fx.a("Readme")), b"mixed\n");
        assert_eq!(read(&fx.a("README")), b"upper\n");
        assert_eq!(read(&fx.a("docs/Guide.md")), b"guide\n");
        assert_eq!(read(&fx.a("docs/guide.md")), b"lower guide\n");
        assert!(!fx.b("readme").exists(), "round {round}: beta got a readme");
        last = Some(run);
    }
    // What exFAT can hold arrives (this needs ferry to place files on exFAT at all, which it
    // cannot yet: "this filesystem does not keep permission bits", then "cannot place file:
    // Operation not permitted" with --permissions exec).
    let run = last.expect("two runs");
    run.expect_code(0);
    assert_eq!(read(&fx.b("other.txt")), b"other\n");
    // Once alpha tells them apart, the one left syncs.
    fs::remove_file(fx.a("README")).expect("remove");
    let run = fx.once(&[]);
    run.expect_code(0);
    assert_eq!(read(&fx.b("Readme")), b"mixed\n");
    assert_eq!(
        read(&fx.b("README")),
        b"mixed\n",
        "exFAT finds it under either case"
    );
    assert_eq!(
        names(&fx.beta)
            .iter()
            .filter(|n| n.eq_ignore_ascii_case("readme"))
            .count(),
        1
    );
}

/// A watching session with a decomposing volume settles: the file is made there once, an
/// edit there comes back to alpha's composed file, and nothing is made again in later cycles.
#[test]
fn nfd_volume_in_a_watching_session_settles() {
    let fx = Fixture::new();
    let _m = mount_nfd(&fx);
    let mut s = fx.watch(&[]);
    write(&fx.a(NFC), "one\n");
    s.wait_until("alpha's composed file is on beta", || {
        fs::read(fx.b(NFD)).is_ok_and(|b| b == b"one\n")
    });
    write(&fx.b(NFD), "two\n");
    s.wait_until("beta's edit is on alpha", || {
        fs::read(fx.a(NFC)).is_ok_and(|b| b == b"two\n")
    });
    // One more change through the session: any cycle recreating the file would show by now.
    write(&fx.a("plain.txt"), "plain\n");
    s.wait_until("plain.txt is on beta", || fx.b("plain.txt").exists());
    s.stop();
    let changes: Vec<String> = s
        .events_since(0, "change")
        .iter()
        .map(|e| format!("{} {} {}", e["side"], e["action"], e["path"]))
        .collect();
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert!(
        s.events_since(0, "error").is_empty(),
        "{:?}",
        s.events_since(0, "error")
    );
    assert_eq!(
        names(&fx.alpha),
        vec![NFC.to_owned(), "plain.txt".to_owned()]
    );
    assert_eq!(
        names(&fx.beta),
        vec![NFD.to_owned(), "plain.txt".to_owned()]
    );
}
