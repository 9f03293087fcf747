//! The data-dir lock keeps a second *process* out, not just a second handle in this one.

use std::process::Command;

use yaad::segment::{DataDir, StorageError};

const CHILD_ENV: &str = "YAAD_LOCK_CHILD_DIR";
const EXPECT_ENV: &str = "YAAD_LOCK_CHILD_EXPECT";

/// Runs `child_opens_data_dir` in a new process of this test binary.
fn run_child(dir: &std::path::Path, expect: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_opens_data_dir",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, dir)
        .env(EXPECT_ENV, expect)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn second_process_gets_locked_error_until_the_first_lets_go() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open(tmp.path()).unwrap();
    let out = run_child(tmp.path(), "locked");
    assert!(out.contains("CHILD: locked"), "{out}");
    drop(dir);
    let out = run_child(tmp.path(), "opened");
    assert!(out.contains("CHILD: opened"), "{out}");
}

/// The child side: only runs when spawned by the test above.
#[test]
#[ignore = "run as a child process by second_process_gets_locked_error_until_the_first_lets_go"]
fn child_opens_data_dir() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return; // run directly (e.g. --include-ignored): nothing to do
    };
    let expect = std::env::var(EXPECT_ENV).unwrap();
    match DataDir::open(std::path::Path::new(&dir)) {
        Err(e @ StorageError::Locked { .. }) => {
            assert!(e.to_string().contains("in use by another yaad process"));
            assert_eq!(expect, "locked");
            println!("CHILD: locked");
        }
        Ok(_) => {
            assert_eq!(expect, "opened");
            println!("CHILD: opened");
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}
