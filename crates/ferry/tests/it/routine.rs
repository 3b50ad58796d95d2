//! Sessions survive routine work (issue "the first hour of real use", items 1-3): a full disk
//! is said once, retried slowly and converges once space is freed; `rm -rf node_modules` and a
//! rename made while ferry was stopped propagate (with copies kept), not refused; a recreated
//! container or a mirror made again is a new endpoint filled from the other side.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::remote_support::*;
use crate::support::*;

/// A tmpfs of `size` mounted over `dir` for the test's lifetime (needs root).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        assert!(
            is_root(),
            "this test mounts a small tmpfs to fill a disk and must run as root (CI does)"
        );
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("running mount");
        assert!(st.success(), "mount -t tmpfs failed: {st}");
        Tmpfs(dir.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("running mount");
        assert!(st.success(), "remounting the tmpfs failed: {st}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_said_once_retried_slowly_and_converges_once_space_is_freed() {
    let fx = Fixture::new();
    let disk = Tmpfs::mount(&fx.beta, "1m");
    let big = pseudo_random(11, 1_600_000);
    write(&fx.a("src/x"), &big);
    write(&fx.a("small.txt"), "fits\n");
    let mut s = fx.watch(&[]);
    // Five seconds of a full disk.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        s.poll_events(Duration::from_millis(50));
    }
    let said: Vec<String> = s
        .log
        .iter()
        .filter(|e| is(e, "error") && e["path"] == "src/x")
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        said,
        vec!["no space left on device writing src/x (1.6 MB needed); retrying until there is"],
        "the reason is said once"
    );
    let failed_cycles = s
        .log
        .iter()
        .filter(|e| is(e, "cycle_end") && e["errors"].as_u64().unwrap_or(0) > 0)
        .count();
    // Retries 1 s, 2 s, 4 s apart (the old loop ran 9 to 35 cycles a second).
    assert!(
        failed_cycles <= 5,
        "{failed_cycles} failing cycles in 5 s: retries do not back off"
    );
    assert_content(&fx.b("small.txt"), "fits\n");
    disk.resize("4m");
    s.wait_until("src/x to arrive once space is freed", || {
        fs::read(fx.b("src/x")).is_ok_and(|d| d == big)
    });
    assert!(!s.exited(), "the session ended");
    s.stop();
}

/// `count` files of a few bytes under `dir` (ten per directory).
fn many_files(dir: &Path, count: usize, tag: &str) {
    for i in 0..count {
        write(
            &dir.join(format!("p{:03}/f{i}.js", i / 10)),
            format!("{tag} {i}\n"),
        );
    }
}

#[test]
fn rm_rf_node_modules_while_watching_propagates_and_keeps_copies() {
    let fx = Fixture::new();
    many_files(&fx.a("node_modules"), 1040, "module");
    many_files(&fx.a("src"), 200, "source");
    fx.once(&[]).expect_code(0);
    let mut s = fx.watch(&[]);
    fs::remove_dir_all(fx.b("node_modules")).expect("rm -rf node_modules");
    s.wait_until("the deletion to reach alpha", || {
        !exists(&fx.a("node_modules"))
    });
    assert!(!s.exited(), "the session ended:\n{}", s.stderr());
    // `npm install` brings it back: that propagates too.
    many_files(&fx.b("node_modules"), 1040, "module v2");
    s.wait_until("the reinstall to reach alpha", || {
        fs::read(fx.a("node_modules/p103/f1039.js")).is_ok_and(|d| d == b"module v2 1039\n")
    });
    s.stop();
    fx.assert_synced();
    // Every file the deletion removed on alpha is kept in alpha's backup area.
    let kept: Vec<String> = fx
        .backup_files()
        .iter()
        .filter(|p| p.to_string_lossy().contains("/backups/alpha/"))
        .filter_map(|p| fs::read_to_string(p).ok())
        .collect();
    for i in (0..1040).step_by(97) {
        assert!(
            kept.iter().any(|c| c == &format!("module {i}\n")),
            "no copy of node_modules file {i} in alpha's backup area"
        );
    }
}

#[test]
fn a_rename_made_while_ferry_was_stopped_is_not_a_wipe() {
    let fx = Fixture::new();
    many_files(&fx.a("src"), 200, "source");
    many_files(&fx.a("doc"), 100, "doc");
    fx.once(&[]).expect_code(0);
    fs::rename(fx.a("src"), fx.a("lib")).expect("mv src lib");
    let run = fx.once(&[]);
    run.expect_code(0);
    fx.assert_synced();
    assert!(!exists(&fx.b("src")) && exists(&fx.b("lib/p019/f199.js")));
}

#[test]
fn accept_wipe_lets_one_wipe_through_not_every_later_one() {
    let fx = Fixture::new();
    many_files(&fx.a("a"), 20, "a");
    fx.once(&[]).expect_code(0);
    let mut s = fx.watch(&["--accept-wipe"]);
    // A wipe later in the session is refused all the same.
    for e in fs::read_dir(&fx.beta).expect("ls beta").flatten() {
        fs::remove_dir_all(e.path()).expect("rm -rf beta/*");
    }
    let st = s.wait_exit("ferry to stop at the wiped root");
    assert_ne!(st.code(), Some(0), "{}", s.stderr());
    assert!(exists(&fx.a("a/p001/f19.js")), "alpha lost its files");
}

#[test]
fn a_mirror_deleted_while_stopped_is_filled_again_not_refused() {
    let fx = Fixture::new();
    many_files(&fx.a("src"), 50, "source");
    fx.once(&[]).expect_code(0);
    fs::remove_dir_all(&fx.beta).expect("rm -rf beta");
    let run = fx.once(&[]);
    run.expect_code(0);
    assert!(
        !run.events("new_endpoint").is_empty(),
        "no new_endpoint event\n{run}"
    );
    fx.assert_synced();
    // And a stale file only the new mirror has is not copied back to the source tree.
    fs::remove_dir_all(&fx.beta).expect("rm -rf beta");
    mkdir(&fx.beta);
    write(&fx.b("stale.txt"), "only in the new mirror\n");
    fx.once(&[]).expect_code(0);
    assert!(
        !exists(&fx.a("stale.txt")),
        "a fresh side's own file went back"
    );
    assert_content(&fx.b("stale.txt"), "only in the new mirror\n");
    assert_content(&fx.b("src/p004/f49.js"), "source 49\n");
    // Two-way again from the next cycle: a new file in the mirror does go back.
    write(&fx.b("new.txt"), "made after the fill\n");
    fx.once(&[]).expect_code(0);
    assert_content(&fx.a("new.txt"), "made after the fill\n");
}

/// `docker rm -f` and `docker run` again under the same name: what `compose up
/// --force-recreate` and every rebuild do.
fn recreate(c: &Container) {
    docker_run_ok(&["rm", "-f", &c.name]);
    docker_run_ok(&["run", "-d", "--name", &c.name, busybox_image()]);
}

fn remote_command(fx: &Fixture) -> Command {
    let mut c = fx.command();
    c.env("FERRY_AGENT", static_agent());
    c
}

#[test]
fn docker_a_recreated_container_is_a_new_endpoint_filled_from_the_host() {
    let _serial = serial();
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    many_files(&fx.a("src"), 30, "source");
    let run = fx.run_command(remote_command(&fx), remote_args(&fx, &beta, &["--once"]));
    run.expect_code(0);
    recreate(&c);
    // The image's own file in the new container: it stays there and is not copied back.
    c.sh("mkdir -p /srv/app/etc && echo image > /srv/app/etc/from-image");
    let run = fx.run_command(remote_command(&fx), remote_args(&fx, &beta, &["--once"]));
    run.expect_code(0);
    assert!(
        !run.events("new_endpoint").is_empty(),
        "no new_endpoint event\n{run}"
    );
    assert_eq!(
        c.read_file("/srv/app/src/p002/f29.js").as_deref(),
        Some(&b"source 29\n"[..])
    );
    assert!(
        !exists(&fx.a("etc")),
        "the image's file came back to the host"
    );
    assert!(exists(&fx.a("src/p002/f29.js")), "the host lost files");

    // While watching: recreated under the session's feet, then edited on both sides.
    let mut s = Session::spawn(remote_command(&fx), remote_args(&fx, &beta, &[]));
    s.wait_event(0, "the `watching` event", |e| is(e, "watching"));
    let mark = s.log.len();
    recreate(&c);
    s.wait_event(mark, "a `new_endpoint` event after the recreate", |e| {
        is(e, "new_endpoint") && e["side"] == "beta"
    });
    s.wait_until("the new container to be filled", || {
        c.read_file("/srv/app/src/p000/f0.js").as_deref() == Some(&b"source 0\n"[..])
    });
    c.sh("echo 'made in the new container' > /srv/app/src/generated.js");
    s.wait_until("the container's new file to reach the host", || {
        fs::read(fx.a("src/generated.js")).is_ok_and(|d| d == b"made in the new container\n")
    });
    assert!(!s.exited(), "the session ended:\n{}", s.stderr());
    s.stop();
}

/// A writer filling 40 MB over two seconds: the other side gets the finished file, not every
/// partial version on the way (the watcher waits for the writer to close it).
#[test]
fn a_file_still_being_written_arrives_once_its_writer_closes_it() {
    use std::io::Write;
    let fx = Fixture::new();
    write(&fx.a("keep.txt"), "x\n");
    let mut s = fx.watch(&[]);
    let mark = s.log.len();
    let chunk = pseudo_random(5, 2 << 20);
    let mut f = fs::File::create(fx.a("big.bin")).expect("create big.bin");
    for _ in 0..20 {
        f.write_all(&chunk).expect("write");
        f.sync_data().expect("fsync");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(f);
    s.wait_until("big.bin to arrive whole", || {
        fs::metadata(fx.b("big.bin")).is_ok_and(|m| m.len() == 40 << 20)
    });
    s.stop();
    let versions = s
        .events_since(mark, "change")
        .iter()
        .filter(|e| e["path"] == "big.bin")
        .count();
    assert!(
        versions <= 2,
        "big.bin reached beta as {versions} versions while it was being written"
    );
    fx.assert_synced();
}

/// The connection to a new endpoint lost while it is being filled (the agent killed, the
/// container restarted): the cycle after the reconnect goes on filling it. It is not a first
/// sync that merges the image's files back into the host (or, without `--yes`, refuses and
/// ends the session).
#[test]
fn docker_a_fill_cut_short_by_a_lost_connection_is_still_a_fill() {
    let _serial = serial();
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    many_files(&fx.a("src"), 10, "source");
    let run = fx.run_command(remote_command(&fx), remote_args(&fx, &beta, &["--once"]));
    run.expect_code(0);
    recreate(&c);
    c.sh("mkdir -p /srv/app/etc && echo image > /srv/app/etc/from-image");
    // Big enough that the fill is still streaming when the agent is killed.
    let big = pseudo_random(11, 100 << 20);
    write(&fx.a("big.bin"), &big);
    drop(big);
    let mut s = Session::spawn(remote_command(&fx), remote_args(&fx, &beta, &[]));
    s.wait_event(0, "a `new_endpoint` event", |e| {
        is(e, "new_endpoint") && e["side"] == "beta"
    });
    let mark = s.log.len();
    c.sh("kill -9 $(pidof ferry)");
    s.wait_event(mark, "a `reconnected` event", |e| {
        is(e, "reconnected") && e["side"] == "beta"
    });
    let back = s
        .log
        .iter()
        .position(|e| is(e, "reconnected"))
        .unwrap_or(s.log.len());
    let fills_done = s.log[..back].iter().filter(|e| is(e, "cycle_end")).count();
    // A debug build streams slowly: a longer deadline than a session's usual one.
    wait_until(
        Duration::from_secs(180),
        "big.bin to reach the new container whole",
        || {
            c.sh("wc -c < /srv/app/big.bin 2>/dev/null || echo 0")
                .trim()
                == (100u64 << 20).to_string()
        },
    );
    assert!(
        !s.exited(),
        "the session ended after the reconnect:\n{}",
        s.stderr()
    );
    assert!(
        !exists(&fx.a("etc")),
        "the image's file came back to the host after the reconnect"
    );
    assert_eq!(c.sh("cat /srv/app/etc/from-image").trim(), "image");
    // The kill did cut the fill short (else this test shows nothing).
    assert_eq!(
        fills_done, 0,
        "the fill finished before the agent was killed; make big.bin bigger"
    );
    s.stop();
}

/// What the image put in a directory of its own stays in the container when that directory
/// is touched later on either side: a file the app adds there, or one the host adds, syncs
/// alone; the image's files do not come back with it.
#[test]
fn docker_an_image_directory_touched_later_does_not_bring_the_image_files_back() {
    let _serial = serial();
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    many_files(&fx.a("src"), 5, "source");
    let once = || fx.run_command(remote_command(&fx), remote_args(&fx, &beta, &["--once"]));
    once().expect_code(0);
    recreate(&c);
    c.sh("mkdir -p /srv/app/etc /srv/app/cache && echo image > /srv/app/etc/from-image && echo image > /srv/app/cache/from-image");
    once().expect_code(0);
    assert!(
        !exists(&fx.a("etc")),
        "the image's directory came to the host"
    );
    // The app writes next to the image's file; the host adds one to the other directory.
    c.sh("echo app > /srv/app/etc/app.conf");
    write(&fx.a("cache/host.txt"), "host\n");
    once().expect_code(0);
    assert_content(&fx.a("etc/app.conf"), "app\n");
    assert_eq!(c.sh("cat /srv/app/cache/host.txt").trim(), "host");
    assert!(
        !exists(&fx.a("etc/from-image")),
        "the image's file came to the host with the app's file beside it"
    );
    assert!(
        !exists(&fx.a("cache/from-image")),
        "the image's file came to the host when the host wrote beside it"
    );
    assert_eq!(c.sh("cat /srv/app/etc/from-image").trim(), "image");
    assert_eq!(c.sh("cat /srv/app/cache/from-image").trim(), "image");
    // Stable: another run changes nothing.
    let run = once();
    run.expect_code(0);
    assert!(
        !exists(&fx.a("etc/from-image")) && !exists(&fx.a("cache/from-image")),
        "a later run brought the image's files to the host\n{run}"
    );
}
