//! Runs the real `vx6` binary against real files.

use std::path::Path;
use std::process::{Command, Output};

fn vx6(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vx6"))
        .args(args)
        .env_remove("VX6_HOME")
        .output()
        .expect("run vx6")
}

fn home_arg(dir: &Path) -> String {
    dir.to_str().unwrap().to_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The failure contract: non-zero exit and exactly one line on stderr, which is returned.
fn one_line_error(o: &Output) -> String {
    assert!(!o.status.success(), "expected failure, got {o:?}");
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "stderr is not one line: {err:?}");
    assert!(err.starts_with("vx6: error: "), "{err:?}");
    err
}

fn init(dir: &Path, name: &str) -> String {
    let out = vx6(&["init", "--home", &home_arg(dir), "--name", name]);
    assert!(out.status.success(), "{out:?}");
    stdout(&out).trim().to_owned()
}

#[test]
fn init_then_id() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("node");
    let node_id = init(&home, "alice");
    assert_eq!(node_id.len(), 52);
    assert!(
        node_id
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))
    );

    let out = vx6(&["id", "--home", &home_arg(&home)]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], node_id);
    assert_eq!(lines[1], "username: alice");
    assert!(lines[2].starts_with("public-key: "));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.join("identity.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let config = std::fs::read_to_string(home.join("config.toml")).unwrap();
    assert!(config.contains("name = \"alice\""));
    assert!(
        config.lines().any(|l| l.starts_with('#')),
        "config is commented"
    );

    // The node's own signed name claim is in the registry.
    let out = vx6(&["records", "--home", &home_arg(&home)]);
    assert!(out.status.success(), "{out:?}");
    let listing = stdout(&out);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("name-claim") && l.contains(&node_id) && l.contains("alice")),
        "{listing}"
    );
}

#[test]
fn home_from_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vx6"))
        .args(["init", "--name", "envnode"])
        .env("VX6_HOME", tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(tmp.path().join("identity.key").exists());
    let id = Command::new(env!("CARGO_BIN_EXE_vx6"))
        .arg("id")
        .env("VX6_HOME", tmp.path())
        .output()
        .unwrap();
    assert_eq!(stdout(&id).lines().next().unwrap(), stdout(&out).trim());
}

#[test]
fn second_init_refuses_and_keeps_the_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let first = init(tmp.path(), "alice");
    let key_before = std::fs::read(tmp.path().join("identity.key")).unwrap();
    let err = one_line_error(&vx6(&[
        "init",
        "--home",
        &home_arg(tmp.path()),
        "--name",
        "bob",
    ]));
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read(tmp.path().join("identity.key")).unwrap(),
        key_before
    );
    let out = vx6(&["id", "--home", &home_arg(tmp.path())]);
    assert_eq!(stdout(&out).lines().next().unwrap(), first);
    assert!(stdout(&out).contains("username: alice"));
}

#[test]
fn missing_identity_says_how_to_create_one() {
    let tmp = tempfile::tempdir().unwrap();
    let err = one_line_error(&vx6(&["id", "--home", &home_arg(tmp.path())]));
    assert!(
        err.contains("no identity at") && err.contains("vx6 init"),
        "{err}"
    );
}

#[test]
fn corrupt_identity_is_a_clear_error_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "alice");
    let path = tmp.path().join("identity.key");
    for garbage in [
        &b"vx6-ed25519-secret-v1 nothex"[..],
        b"",
        b"\xff\xfe\x00binary",
        b"vx6-ed25519-secret-v1 00\nvx6-ed25519-secret-v1 00\n",
    ] {
        std::fs::write(&path, garbage).unwrap();
        let err = one_line_error(&vx6(&["id", "--home", &home_arg(tmp.path())]));
        assert!(err.contains("is corrupt"), "{err}");
        assert!(err.contains(path.to_str().unwrap()), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            garbage,
            "identity file was touched"
        );
    }
}

#[test]
fn unreadable_identity_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "alice");
    let path = tmp.path().join("identity.key");
    // Tests run as root in CI, where mode 000 does not stop reads; a directory in the file's
    // place is unreadable for everyone.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let err = one_line_error(&vx6(&["id", "--home", &home_arg(tmp.path())]));
    assert!(err.contains("reading identity file"), "{err}");
}

#[cfg(unix)]
#[test]
fn identity_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "alice");
    let path = tmp.path().join("identity.key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = one_line_error(&vx6(&["id", "--home", &home_arg(tmp.path())]));
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn corrupt_registry_is_moved_aside_and_the_node_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "alice");
    let path = tmp.path().join("registry.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    let out = vx6(&["records", "--home", &home_arg(tmp.path())]);
    assert!(out.status.success(), "{out:?}");
    let warning = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(warning.lines().count(), 1, "{warning}");
    assert!(
        warning.contains("is corrupt (checksum mismatch)"),
        "{warning}"
    );
    assert_eq!(
        stdout(&out).lines().count(),
        1,
        "only the header: registry is empty"
    );

    // Nothing is lost: the corrupt bytes are kept beside it, byte for byte.
    let aside: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().contains("registry.bin.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(warning.contains(aside[0].to_str().unwrap()), "{warning}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), bytes);
}

#[test]
fn truncated_and_foreign_registries_are_moved_aside() {
    for content in [&b"VX6R\x01"[..], b"{\"json\": true}"] {
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path(), "alice");
        std::fs::write(tmp.path().join("registry.bin"), content).unwrap();
        let out = vx6(&["records", "--home", &home_arg(tmp.path())]);
        assert!(out.status.success(), "{out:?}");
        let warning = String::from_utf8(out.stderr.clone()).unwrap();
        assert!(warning.contains("is corrupt"), "{warning}");
        assert!(!tmp.path().join("registry.bin").exists());
    }
}

#[test]
fn unreadable_registry_is_a_clear_error_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "alice");
    let path = tmp.path().join("registry.bin");
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("keep"), b"x").unwrap();
    let err = one_line_error(&vx6(&["records", "--home", &home_arg(tmp.path())]));
    assert!(err.contains("reading registry file"), "{err}");
    assert!(path.join("keep").exists());
}

#[test]
fn bad_config_names_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "alice");
    let path = tmp.path().join("config.toml");
    std::fs::write(&path, "name = \"alice\"\n\nlisten = 5\n").unwrap();
    let err = one_line_error(&vx6(&["id", "--home", &home_arg(tmp.path())]));
    assert!(
        err.contains("line 3") && err.contains("invalid type"),
        "{err}"
    );

    std::fs::write(&path, "# comment\n\nname = \"alice\"\nlisten_on = 5\n").unwrap();
    let err = one_line_error(&vx6(&["id", "--home", &home_arg(tmp.path())]));
    assert!(
        err.contains("line 4") && err.contains("unknown field"),
        "{err}"
    );

    std::fs::write(&path, "name = \"Not Valid\"\n").unwrap();
    let err = one_line_error(&vx6(&["id", "--home", &home_arg(tmp.path())]));
    assert!(
        err.contains("line 1") && err.contains("username contains"),
        "{err}"
    );
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    for args in [
        &["frobnicate"][..],
        &["init", "--name"],
        &["init", "--name", "-x"],
        &["init", "--name", "UPPER"],
        &["id", "--bogus"],
    ] {
        let out = vx6(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        one_line_error(&out);
    }
    let help = vx6(&["--help"]);
    assert!(help.status.success());
    assert!(stdout(&help).contains("init"));
}

#[test]
fn node_argument_errors_are_one_line_and_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "alice");
    let home = home_arg(tmp.path());
    let id = NODE_ID_EXAMPLE;
    let cases: &[(&[&str], &str)] = &[
        (&["node", "--home", &home], "no listen address"),
        (
            &[
                "node",
                "--home",
                &home,
                "--listen",
                "[::1]:0",
                "--serve",
                "ssh=127.0.0.1:22",
            ],
            "explicit choice",
        ),
        (
            &[
                "node",
                "--home",
                &home,
                "--listen",
                "[::1]:0",
                "--serve",
                "ssh=192.0.2.1:22",
                "--public",
            ],
            "not a loopback address",
        ),
        (
            &[
                "node",
                "--home",
                &home,
                "--listen",
                "[::1]:0",
                "--serve",
                "ssh=127.0.0.1:22",
                "--public",
                "--allow",
                id,
            ],
            "contradict",
        ),
        (
            &[
                "node",
                "--home",
                &home,
                "--listen",
                "[::1]:0",
                "--forward",
                "Alice.ssh=127.0.0.1:2222",
            ],
            "target must be",
        ),
        (
            &[
                "node",
                "--home",
                &home,
                "--listen",
                "[::1]:0",
                "--bootstrap",
                "nowhere",
            ],
            "--bootstrap",
        ),
        (
            &["node", "--home", &home, "--listen", "nowhere"],
            "not an address",
        ),
        (
            &[
                "node",
                "--home",
                &home,
                "--listen",
                "[::1]:0",
                "--transport",
                "carrier-pigeon",
            ],
            "invalid value",
        ),
    ];
    for (args, want) in cases {
        let err = one_line_error(&vx6(args));
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn port_in_use_and_missing_daemon_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "alice");
    let home = home_arg(tmp.path());
    let taken = std::net::UdpSocket::bind("[::1]:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = one_line_error(&vx6(&["node", "--home", &home, "--listen", &addr]));
    assert!(err.contains("binding UDP") && err.contains(&addr), "{err}");
    let err = one_line_error(&vx6(&["status", "--home", &home]));
    assert!(err.contains("no daemon is running"), "{err}");
}

const NODE_ID_EXAMPLE: &str = "t4ylo4fkbhl76t5aqo6a3oadlnqzc2uzhaayx66uob7hw2ydn7cq";

/// `--via` and `--hops` belong to the `--forward` before them; every misuse is named, and the
/// daemon does not start.
#[test]
fn via_and_hops_misuse_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "carol");
    let home = home_arg(tmp.path());
    let fwd = "alice.ssh=127.0.0.1:2222";
    for (extra, needle) in [
        (vec!["--via", "relay"], "--via must follow the --forward"),
        (vec!["--hops", "2"], "--hops must follow the --forward"),
        (
            vec!["--forward", fwd, "--via", "sideways"],
            "is not a path kind",
        ),
        (
            vec!["--forward", fwd, "--hops", "0"],
            "is not a hop count from 1 to 8",
        ),
        (
            vec!["--forward", fwd, "--hops", "9"],
            "is not a hop count from 1 to 8",
        ),
        (
            vec!["--forward", fwd, "--via", "relay", "--via", "auto"],
            "two --via",
        ),
        (
            vec!["--forward", fwd, "--via", "direct", "--hops", "2"],
            "goes --via direct",
        ),
    ] {
        let mut args = vec!["node", "--home", &home, "--listen", "[::1]:0"];
        args.extend(extra.iter().copied());
        let out = vx6(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {out:?}");
        let err = one_line_error(&out);
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
}

/// `--sla` belongs to the `--forward` before it and its settings are checked on the spot; a
/// policy needs QUIC, metrics a loopback address, and the log format a known name.
#[test]
fn policy_metrics_and_log_format_misuse_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "carol");
    let home = home_arg(tmp.path());
    let fwd = "alice.ssh=127.0.0.1:2222";
    for (extra, needle, code) in [
        (
            vec!["--sla", "max-loss=5%"],
            "--sla must follow the --forward",
            2,
        ),
        (
            vec!["--forward", fwd, "--sla", "max-loss=120%"],
            "bad value \"120%\" for max-loss",
            2,
        ),
        (
            vec!["--forward", fwd, "--sla", "max-rtt=fast"],
            "for max-rtt",
            2,
        ),
        (
            vec!["--forward", fwd, "--sla", "colour=blue"],
            "unknown policy setting \"colour\"",
            2,
        ),
        (
            vec!["--forward", fwd, "--sla", "strict", "--sla", "hold-down=3s"],
            "two --sla",
            2,
        ),
        (
            vec![
                "--transport",
                "tcp",
                "--forward",
                fwd,
                "--sla",
                "max-loss=5%",
            ],
            "needs --transport quic",
            1,
        ),
        (
            vec!["--metrics", "[fd00::1]:9464"],
            "serve metrics on a loopback address",
            1,
        ),
        (vec!["--announce", "nowhere"], "--announce", 1),
        (
            vec!["--announce", "[::]:4433"],
            "announce an address and port others can dial",
            1,
        ),
    ] {
        let mut args = vec!["node", "--home", &home, "--listen", "[::1]:0"];
        args.extend(extra.iter().copied());
        let out = vx6(&args);
        assert_eq!(out.status.code(), Some(code), "{extra:?}: {out:?}");
        let err = one_line_error(&out);
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_vx6"))
        .args(["node", "--home", &home, "--listen", "[::1]:0"])
        .env("VX6_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out).contains("VX6_LOG_FORMAT=\"xml\""));
    // Policy settings in the config name where they came from.
    let config = tmp.path().join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\nforward = [\"{fwd}\"]\n[policy]\n\"alice.ssh\" = \"max-loss=lots\"\n"),
    )
    .unwrap();
    let out = vx6(&["node", "--home", &home, "--listen", "[::1]:0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = one_line_error(&out);
    assert!(
        err.contains("config policy") && err.contains("max-loss"),
        "{err}"
    );
    for args in [
        vec!["policy", "--home", &home, "127.0.0.1:2222"],
        vec![
            "policy",
            "--home",
            &home,
            "127.0.0.1:2222",
            "--sla",
            "max-loss=x",
        ],
        vec!["ping", "--home", &home, "alice.ssh", "--count", "0"],
    ] {
        let out = vx6(&args);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(!one_line_error(&out).is_empty());
    }
}
