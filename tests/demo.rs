//! The newcomer's path: `carat-catalogd demo` syncs from the built-in
//! simulator, prints a curl line that works, and stops cleanly on Ctrl-C.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{bin_command, command, require_tool};

#[test]
fn demo_syncs_prints_a_working_curl_line_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("d");
    require_tool("curl", "curl");
    let mut child = bin_command()
        .args(["demo", "--dir", demo_dir.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = vec![];
    while !lines.iter().any(|l: &String| l.contains("Serving until Ctrl-C")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("the demo did not get ready:\n{}", lines.join("\n")),
        }
    }
    let text = lines.join("\n");
    assert!(
        text.contains("normal") && text.contains("4 dealers × 67 DDDs"),
        "{text}"
    );
    let curl = lines
        .iter()
        .find(|l| l.trim_start().starts_with("curl --unix-socket") && l.contains("/ddds/11"))
        .expect("a curl line")
        .trim()
        .to_owned();
    // Run the printed line exactly as printed, by a shell, as a newcomer
    // pastes it (curl is required: `.ci/run` installs it).
    let out = command("sh").arg("-c").arg(&curl).output().unwrap();
    assert!(
        out.status.success(),
        "{curl}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = out.stdout;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{curl} printed no JSON ({e}): {}", String::from_utf8_lossy(&body)));
    assert_eq!(v["ddd"], "11");
    assert_eq!(v["dealers"].as_array().unwrap().len(), 4);
    assert_eq!(v["stale"], false);

    // Everything it wrote is inside its directory.
    for f in [
        "config.toml",
        "catalog.db",
        "merchant_key",
        "jwtRS256.key",
        "sim-ca.pem",
        "catalog.sock",
    ] {
        assert!(demo_dir.join(f).exists(), "{f} missing");
    }

    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "{st:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!demo_dir.join("catalog.sock").exists());
}
