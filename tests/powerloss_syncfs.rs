//! A sync batch made durable with one `syncfs` (`--syncfs-from`) keeps every file of the batch
//! through a power cut, as an `fdatasync` per file does, open files and closed ones alike; a
//! write after the sync may be lost.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use yaad::segment::powercut;
use yaad::store::{SyncBatch, SyncFile};

fn batch_survives_a_cut(syncfs_from: usize) {
    let dir = tempfile::tempdir().unwrap();
    let cuts = tempfile::tempdir().unwrap();
    let sim = powercut::register(dir.path(), b"before").unwrap();
    let mut files = Vec::new();
    for i in 0..5 {
        let path = dir.path().join(format!("f{i}"));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(format!("synced {i}").as_bytes()).unwrap();
        // Two of them closed before the sync, as a far segment leaving the open-file cache.
        files.push(if i < 2 {
            drop(f);
            SyncFile::Closed(path)
        } else {
            SyncFile::Open(Arc::new(f))
        });
    }
    let batch = SyncBatch {
        files,
        dir: Some(dir.path().to_path_buf()),
        epoch: 1,
    };
    batch.sync_grouped(syncfs_from).unwrap();
    // Written after the sync: may or may not survive.
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("f4"))
        .unwrap()
        .write_all_at(b"UNSYNCED", 0)
        .unwrap();
    for seed in 0..20u64 {
        let image = cuts.path().join(seed.to_string());
        sim.cut_now(seed, &image).unwrap();
        for i in 0..4 {
            let got = std::fs::read(image.join(format!("f{i}"))).unwrap();
            assert_eq!(got, format!("synced {i}").as_bytes(), "f{i}, seed {seed}");
        }
        let last = std::fs::read(image.join("f4")).unwrap();
        assert!(
            last == b"synced 4" || last == b"UNSYNCED",
            "f4, seed {seed}: {last:?}"
        );
    }
}

#[test]
fn one_syncfs_for_the_batch() {
    batch_survives_a_cut(2);
}

#[test]
fn an_fdatasync_per_file() {
    batch_survives_a_cut(0);
}

/// Below the threshold each file gets its `fdatasync`; at it, one `syncfs` covers them all.
#[test]
fn threshold_counts_the_files() {
    for from in [1, 5, 6, 100] {
        batch_survives_a_cut(from);
    }
}
