//! The power-loss simulator: what a data dir may hold after the power fails at a given moment.
//!
//! The model (storage-format.md, *What the format assumes of the disk*): after a power cut a
//! file holds the content it had at its last completed sync ([`super::fsio`]: `fdatasync`,
//! `msync`), plus any subset of the pages written since, each page whole or torn at 512-byte
//! sectors; a directory holds the names it had at its last directory fsync, and each name
//! created, renamed or removed since may or may not have reached the disk. A power cut is
//! also a reboot: the data dir restored from a cut gets a new boot id.
//!
//! How: a [`Sim`] registered for a data dir is told of every sync through the data dir's
//! durability boundary ([`super::fsio`]). Before a sync it copies what the sync will make
//! durable (the file's bytes, keyed by its inode; the directory's names); once the sync
//! succeeded that copy is the durable state. A *cut* at any moment builds a new directory
//! from the durable state and, page by page and name by name, a random choice of what was
//! written since. Bytes written before a sync started are durable once it returns; writes
//! racing with a sync count as not yet durable (stricter than the kernel, never laxer). Syncs
//! of one file may overlap (the server's sync threads): the copy of the one that started last
//! is the durable state, whichever completes last.
//! A cut can be taken now ([`Sim::cut_now`]) or planned at the n-th sync event
//! ([`Sim::plan_cut`]), which cuts *inside* whatever the code is doing (a sync batch, a
//! compaction, a snapshot flush). In a process started with `YAAD_POWERCUT` the planned cut
//! kills the process right after the image is built, so no reply covering a later sync is
//! ever sent ([`from_env`]).
//!
//! Test machinery, in the library so that the binary can be cut end to end; with no [`Sim`]
//! registered the cost in [`super::fsio`] is one atomic load per sync.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// A page: the unit in which written data may or may not reach the device.
const PAGE: usize = 4096;
/// A sector: a page may be torn at these boundaries, never inside one.
const SECTOR: usize = 512;

/// An inode, told apart from a later inode that reuses its number by its birth time.
type Key = (u64, u64, i128);

static ACTIVE: AtomicBool = AtomicBool::new(false);
static SIMS: RwLock<Vec<Arc<Sim>>> = RwLock::new(Vec::new());

/// The simulator of one data dir (see the module documentation).
#[derive(Debug)]
pub struct Sim {
    root: PathBuf,
    boot: Vec<u8>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Durable bytes of each inode synced (or present at registration).
    files: HashMap<Key, Vec<u8>>,
    /// Durable names of each directory, relative to the root.
    dirs: HashMap<PathBuf, BTreeMap<OsString, Key>>,
    /// The sync event whose copy each durable file and directory is (0: from registration).
    /// Syncs of one file may overlap (two sync threads): one that started later copied newer
    /// bytes, which an earlier one completing after it does not make less durable.
    copied_at: HashMap<Copied, u64>,
    /// Sync calls seen (each counts once, before it runs).
    events: u64,
    plan: Option<Plan>,
    /// Images built by a planned cut.
    cuts: Vec<PathBuf>,
}

#[derive(Debug)]
struct Plan {
    at: u64,
    seed: u64,
    out: PathBuf,
    then_kill: bool,
}

type Files = HashMap<Key, Vec<u8>>;

/// What a durable copy is of.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Copied {
    File(Key),
    Dir(PathBuf),
}
type Dirs = HashMap<PathBuf, BTreeMap<OsString, Key>>;

/// Every file's bytes and every directory's names under `root`.
fn read_tree(root: &Path) -> io::Result<(Files, Dirs)> {
    let (mut files, mut dirs) = (HashMap::new(), HashMap::new());
    for (rel, names) in walk(root)? {
        let mut listing = BTreeMap::new();
        for (name, (key, path)) in names {
            match fs::read(&path) {
                Ok(bytes) => {
                    files.insert(key, bytes);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            listing.insert(name, key);
        }
        dirs.insert(rel, listing);
    }
    Ok((files, dirs))
}

/// Unregisters its [`Sim`] when dropped.
#[derive(Debug)]
pub struct Registration(Arc<Sim>);

impl std::ops::Deref for Registration {
    type Target = Sim;
    fn deref(&self) -> &Sim {
        &self.0
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sims = SIMS.write().unwrap_or_else(|e| e.into_inner());
        sims.retain(|s| !Arc::ptr_eq(s, &self.0));
        ACTIVE.store(!sims.is_empty(), Ordering::Release);
    }
}

/// Starts simulating power loss for the data dir `root` (created if missing), whose processes
/// see `boot` as the boot id. Everything in it now counts as durable.
pub fn register(root: &Path, boot: &[u8]) -> io::Result<Registration> {
    fs::create_dir_all(root)?;
    let root = fs::canonicalize(root)?;
    let mut state = State::default();
    let (files, dirs) = read_tree(&root)?;
    state.files = files;
    state.dirs = dirs;
    let sim = Arc::new(Sim {
        root,
        boot: boot.to_vec(),
        state: Mutex::new(state),
    });
    let mut sims = SIMS.write().unwrap_or_else(|e| e.into_inner());
    sims.push(sim.clone());
    ACTIVE.store(true, Ordering::Release);
    Ok(Registration(sim))
}

/// The binary's hook (test use only): with `YAAD_POWERCUT=<event>:<seed>:<image dir>` the
/// data dir is simulated and the process dies (SIGKILL) once the image of a cut at sync event
/// `<event>` is built; with `YAAD_BOOT_ID=<id>` processes see that boot id (a data dir
/// restored from an image is started in a "new boot"). Returns what to keep alive.
pub fn from_env(data_dir: &Path) -> io::Result<Option<Registration>> {
    let plan = std::env::var("YAAD_POWERCUT").ok();
    let boot = std::env::var("YAAD_BOOT_ID").ok();
    if plan.is_none() && boot.is_none() {
        return Ok(None);
    }
    let boot = boot.unwrap_or_else(|| format!("sim-{}", std::process::id()));
    let reg = register(data_dir, boot.as_bytes())?;
    if let Some(plan) = plan {
        let bad = || io::Error::other(format!("YAAD_POWERCUT={plan}: want EVENT:SEED:DIR"));
        let mut parts = plan.splitn(3, ':');
        let at = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let seed = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let out = PathBuf::from(parts.next().ok_or_else(bad)?);
        reg.lock().plan = Some(Plan {
            at,
            seed,
            out,
            then_kill: true,
        });
    }
    Ok(Some(reg))
}

impl Sim {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sync events seen so far.
    pub fn events(&self) -> u64 {
        self.lock().events
    }

    /// Cuts the power just before sync event number `at` (counting from 1): the image is
    /// built into `out` and the process goes on ([`Sim::take_cut`] tells whether it fired).
    pub fn plan_cut(&self, at: u64, seed: u64, out: PathBuf) {
        self.lock().plan = Some(Plan {
            at,
            seed,
            out,
            then_kill: false,
        });
    }

    /// The image of a planned cut that fired (the plan is then spent), if any.
    pub fn take_cut(&self) -> Option<PathBuf> {
        let mut st = self.lock();
        st.plan = None;
        st.cuts.pop()
    }

    /// Cuts the power now: builds in `out` what the data dir may hold after a power failure at
    /// this moment (`seed` picks which unsynced writes and names made it).
    pub fn cut_now(&self, seed: u64, out: &Path) -> io::Result<()> {
        let st = self.lock();
        self.build(&st, seed, out)
    }

    fn event(&self) -> MutexGuard<'_, State> {
        let mut st = self.lock();
        st.events += 1;
        let fire = st.plan.as_ref().is_some_and(|p| p.at == st.events);
        if fire {
            let plan = st.plan.take().expect("checked above");
            if let Err(e) = self.build(&st, plan.seed, &plan.out) {
                eprintln!("power-cut image {}: {e}", plan.out.display());
                std::process::abort();
            }
            if plan.then_kill {
                // The cut: no later sync may complete and no reply it covers may leave.
                let _ = rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::KILL,
                );
                std::process::abort();
            }
            st.cuts.push(plan.out);
        }
        st
    }

    fn rel(&self, path: &Path) -> Option<PathBuf> {
        path.strip_prefix(&self.root).ok().map(Path::to_path_buf)
    }

    /// Builds a cut's image of the data dir in `out` (see the module documentation).
    fn build(&self, st: &State, seed: u64, out: &Path) -> io::Result<()> {
        let mut rng = fastrand::Rng::with_seed(seed);
        // How much of what was written since the last sync reaches the disk: nothing, all
        // (as after kill -9), or a share of it.
        let bias = match rng.u8(0..4) {
            0 => 0.0,
            1 => 1.0,
            _ => rng.f64(),
        };
        let tree = walk(&self.root)?;
        let by_key: HashMap<Key, PathBuf> = tree
            .values()
            .flat_map(|names| names.values())
            .map(|(key, path)| (*key, path.clone()))
            .collect();
        let names = names_durable_and_current(&st.dirs, &tree);
        let mut groups = ChangedNames::new(&names);
        let mut take_new: HashMap<usize, bool> = HashMap::new();
        let rels: BTreeSet<&PathBuf> = tree.keys().chain(st.dirs.keys()).collect();
        for rel in rels {
            fs::create_dir_all(out.join(rel))?;
        }
        for (n, &(d, c)) in &names {
            let key = match groups.group_of(n) {
                None => d,
                Some(g) => {
                    let new = *take_new.entry(g).or_insert_with(|| rng.f64() < bias);
                    if new { c } else { d }
                }
            };
            let Some(key) = key else { continue };
            let current = match by_key.get(&key).map(fs::read) {
                Some(Ok(bytes)) => Some(bytes),
                // Removed or renamed since the walk: a change racing with the cut, not durable.
                Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => None,
                Some(Err(e)) => return Err(e),
                None => None,
            };
            let bytes = merge(st.files.get(&key), current, bias, &mut rng);
            fs::write(out.join(&n.0).join(&n.1), bytes)?;
        }
        Ok(())
    }

    fn commit(&self, what: Pending) {
        let mut st = self.lock();
        let at = what.at;
        // Whether the copy taken at event `at` is newer than the durable one (and now is).
        let newer = |st: &mut State, of: Copied| {
            let last = st.copied_at.entry(of).or_insert(0);
            let newer = *last <= at;
            *last = (*last).max(at);
            newer
        };
        match what.kind {
            PendingKind::File(key, bytes) => {
                if newer(&mut st, Copied::File(key)) {
                    st.files.insert(key, bytes);
                }
            }
            PendingKind::Dir(rel, names) => {
                if newer(&mut st, Copied::Dir(rel.clone())) {
                    st.dirs.insert(rel, names);
                }
            }
            PendingKind::Tree(files, dirs) => {
                for (key, bytes) in files {
                    if newer(&mut st, Copied::File(key)) {
                        st.files.insert(key, bytes);
                    }
                }
                for (rel, names) in dirs {
                    if newer(&mut st, Copied::Dir(rel.clone())) {
                        st.dirs.insert(rel, names);
                    }
                }
            }
        }
    }
}

/// A durable state recorded before a sync, committed once the sync succeeded.
pub(super) struct Pending {
    sim: Arc<Sim>,
    /// The sync event that took the copy.
    at: u64,
    kind: PendingKind,
}

enum PendingKind {
    File(Key, Vec<u8>),
    Dir(PathBuf, BTreeMap<OsString, Key>),
    Tree(Files, Dirs),
}

impl Pending {
    pub(super) fn commit(self) {
        let sim = self.sim.clone();
        sim.commit(self);
    }
}

fn sim_for(path: &Path) -> Option<Arc<Sim>> {
    let sims = SIMS.read().unwrap_or_else(|e| e.into_inner());
    sims.iter().find(|s| path.starts_with(&s.root)).cloned()
}

fn key_of(m: &fs::Metadata) -> Key {
    let born = m
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    (m.dev(), m.ino(), born)
}

/// Before `fdatasync(file)`: the bytes it will make durable.
pub(super) fn before_file_sync(file: &File) -> Option<Pending> {
    if !ACTIVE.load(Ordering::Acquire) {
        return None;
    }
    let link = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
    let link = link.to_string_lossy();
    let path = PathBuf::from(link.strip_suffix(" (deleted)").unwrap_or(&link));
    let sim = sim_for(&path)?;
    let st = sim.event();
    let meta = file.metadata().ok()?;
    let mut bytes = vec![0; meta.len() as usize];
    if file.read_exact_at(&mut bytes, 0).is_err() {
        bytes = fs::read(&path).ok()?;
    }
    Some(Pending {
        sim: sim.clone(),
        at: st.events,
        kind: PendingKind::File(key_of(&meta), bytes),
    })
}

/// Before `msync` of a mapping of the file at `path`.
pub(super) fn before_path_sync(path: &Path) -> Option<Pending> {
    if !ACTIVE.load(Ordering::Acquire) {
        return None;
    }
    let path = fs::canonicalize(path).ok()?;
    let sim = sim_for(&path)?;
    let st = sim.event();
    let meta = fs::metadata(&path).ok()?;
    let bytes = fs::read(&path).ok()?;
    Some(Pending {
        sim: sim.clone(),
        at: st.events,
        kind: PendingKind::File(key_of(&meta), bytes),
    })
}

/// Before `fsync(dir)`: the names it will make durable.
pub(super) fn before_dir_sync(dir: &Path) -> Option<Pending> {
    if !ACTIVE.load(Ordering::Acquire) {
        return None;
    }
    let dir = fs::canonicalize(dir).ok()?;
    let sim = sim_for(&dir)?;
    let rel = sim.rel(&dir)?;
    let st = sim.event();
    let names = list(&dir)
        .ok()?
        .into_iter()
        .map(|(name, (key, _))| (name, key))
        .collect();
    Some(Pending {
        sim: sim.clone(),
        at: st.events,
        kind: PendingKind::Dir(rel, names),
    })
}

/// Before `syncfs` of the filesystem holding `dir`: everything under the data dir.
pub(super) fn before_tree_sync(dir: &Path) -> Option<Pending> {
    if !ACTIVE.load(Ordering::Acquire) {
        return None;
    }
    let dir = fs::canonicalize(dir).ok()?;
    let sim = sim_for(&dir)?;
    let st = sim.event();
    let (files, dirs) = read_tree(&sim.root).ok()?;
    Some(Pending {
        sim: sim.clone(),
        at: st.events,
        kind: PendingKind::Tree(files, dirs),
    })
}

/// The boot id of a simulated data dir's processes.
pub(super) fn boot_id(dir: &Path) -> Option<Vec<u8>> {
    if !ACTIVE.load(Ordering::Acquire) {
        return None;
    }
    let dir = fs::canonicalize(dir).ok()?;
    Some(sim_for(&dir)?.boot.clone())
}

/// A name in the data dir: its directory (relative to the root) and the name in it.
type Name = (PathBuf, OsString);

/// Every name of the data dir, durable or current: the inode it names durably (as of its
/// directory's last fsync) and the one it names now.
fn names_durable_and_current(
    durable: &Dirs,
    tree: &BTreeMap<PathBuf, Listing>,
) -> BTreeMap<Name, (Option<Key>, Option<Key>)> {
    let mut names: BTreeMap<Name, (Option<Key>, Option<Key>)> = BTreeMap::new();
    for (rel, listing) in durable {
        for (name, key) in listing {
            names.entry((rel.clone(), name.clone())).or_default().0 = Some(*key);
        }
    }
    for (rel, listing) in tree {
        for (name, (key, _)) in listing {
            names.entry((rel.clone(), name.clone())).or_default().1 = Some(*key);
        }
    }
    names
}

/// The names changed since their directory's last fsync, grouped by the inodes they share:
/// a rename changes two names in one step (assumed atomic, as ext4 and xfs journal it), so
/// each group is taken whole, old or new.
struct ChangedNames<'a> {
    /// Each changed name's index in `parent`.
    index: HashMap<&'a Name, usize>,
    /// Union-find over the changed names: a group is the set with the same root.
    parent: Vec<usize>,
}

impl<'a> ChangedNames<'a> {
    fn new(names: &'a BTreeMap<Name, (Option<Key>, Option<Key>)>) -> ChangedNames<'a> {
        let changed: Vec<&Name> = names
            .iter()
            .filter(|(_, (d, c))| d != c)
            .map(|(n, _)| n)
            .collect();
        let mut groups = ChangedNames {
            index: HashMap::new(),
            parent: (0..changed.len()).collect(),
        };
        let mut by_inode: HashMap<Key, usize> = HashMap::new();
        for (i, n) in changed.iter().enumerate() {
            groups.index.insert(n, i);
            let (d, c) = names[*n];
            for key in [d, c].into_iter().flatten() {
                match by_inode.get(&key) {
                    Some(&j) => {
                        let (a, b) = (groups.root(i), groups.root(j));
                        groups.parent[a] = b;
                    }
                    None => {
                        by_inode.insert(key, i);
                    }
                }
            }
        }
        groups
    }

    fn root(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    /// The group of `name` (the same number for every name of it), `None` if unchanged.
    fn group_of(&mut self, name: &Name) -> Option<usize> {
        let i = *self.index.get(name)?;
        Some(self.root(i))
    }
}

type Listing = BTreeMap<OsString, (Key, PathBuf)>;

/// The regular files of `dir` by name.
fn list(dir: &Path) -> io::Result<Listing> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_file() {
            out.insert(entry.file_name(), (key_of(&meta), entry.path()));
        }
    }
    Ok(out)
}

/// Every directory under `root` (relative paths, the root as "") with its regular files.
fn walk(root: &Path) -> io::Result<BTreeMap<PathBuf, Listing>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let dir = root.join(&rel);
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(rel.join(entry.file_name()));
            }
        }
        out.insert(rel, list(&dir)?);
    }
    Ok(out)
}

/// A file after the cut: its durable bytes, with each page (or sector) written since taken
/// from `current` with probability `bias`; its length the durable or the current one.
fn merge(
    durable: Option<&Vec<u8>>,
    current: Option<Vec<u8>>,
    bias: f64,
    rng: &mut fastrand::Rng,
) -> Vec<u8> {
    let durable: &[u8] = durable.map_or(&[], Vec::as_slice);
    let Some(mut current) = current else {
        return durable.to_vec();
    };
    if current == durable {
        return current;
    }
    let len = if current.len() == durable.len() || rng.f64() < bias {
        current.len()
    } else {
        durable.len()
    };
    let mut out = durable.to_vec();
    out.resize(len, 0);
    current.resize(len, 0);
    for page in (0..len).step_by(PAGE) {
        let end = (page + PAGE).min(len);
        if out[page..end] == current[page..end] {
            continue;
        }
        let torn = rng.f64() < 0.5;
        let whole = rng.f64() < bias;
        for sector in (page..end).step_by(SECTOR) {
            let take = if torn { rng.f64() < bias } else { whole };
            if take {
                let stop = (sector + SECTOR).min(end);
                out[sector..stop].copy_from_slice(&current[sector..stop]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::fsio;
    use std::io::Write;

    /// What the cuts of `seeds` leave of `name`: its bytes, or `None` where the name is gone.
    fn outcomes(sim: &Sim, name: &str, seeds: std::ops::Range<u64>) -> Vec<Option<Vec<u8>>> {
        let out = tempfile::tempdir().unwrap();
        seeds
            .map(|seed| {
                let img = out.path().join(seed.to_string());
                sim.cut_now(seed, &img).unwrap();
                fs::read(img.join(name)).ok()
            })
            .collect()
    }

    #[test]
    fn only_synced_data_and_names_are_certain() {
        let dir = tempfile::tempdir().unwrap();
        let sim = register(dir.path(), b"boot-a").unwrap();
        assert_eq!(fsio::boot_id(dir.path()).unwrap(), b"boot-a");
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&[1; 2 * PAGE]).unwrap();
        // Neither the data nor the name is synced: anything from nothing to all of it.
        let seen = outcomes(&sim, "f", 0..64);
        assert!(seen.contains(&None));
        assert!(seen.contains(&Some(vec![1; 2 * PAGE])));
        fsio::sync_file(&f).unwrap();
        fsio::sync_dir(dir.path()).unwrap();
        assert_eq!(sim.events(), 2);
        assert!(
            outcomes(&sim, "f", 0..64)
                .iter()
                .all(|o| o.as_deref() == Some(&[1; 2 * PAGE][..]))
        );
        // A write after the sync: each sector old or new, never anything else.
        f.write_all_at(&[2; PAGE], 0).unwrap();
        let seen = outcomes(&sim, "f", 0..200);
        let mut torn = false;
        for bytes in seen.into_iter().map(Option::unwrap) {
            assert_eq!(&bytes[PAGE..], &[1; PAGE][..]);
            for sector in bytes[..PAGE].chunks(SECTOR) {
                assert!(sector == [1; SECTOR] || sector == [2; SECTOR]);
            }
            torn |= bytes[0] != bytes[PAGE - 1];
        }
        assert!(torn, "some page is torn at a sector boundary");
        // A removal not synced: the name may come back, with its synced bytes.
        fs::remove_file(&path).unwrap();
        let seen = outcomes(&sim, "f", 0..64);
        assert!(seen.contains(&None));
        assert!(seen.contains(&Some(vec![1; 2 * PAGE])));
        fsio::sync_dir(dir.path()).unwrap();
        assert!(outcomes(&sim, "f", 0..64).iter().all(Option::is_none));
    }

    #[test]
    fn a_rename_reaches_the_disk_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("seg"), b"old").unwrap();
        fs::write(dir.path().join("seg.next"), b"new").unwrap();
        let sim = register(dir.path(), b"boot-c").unwrap();
        fs::rename(dir.path().join("seg.next"), dir.path().join("seg")).unwrap();
        let (seg, next) = (
            outcomes(&sim, "seg", 0..64),
            outcomes(&sim, "seg.next", 0..64),
        );
        type Both = (Option<Vec<u8>>, Option<Vec<u8>>);
        let pairs: BTreeSet<Both> = seg.into_iter().zip(next).collect();
        let old = (Some(b"old".to_vec()), Some(b"new".to_vec()));
        let new = (Some(b"new".to_vec()), None);
        assert_eq!(pairs, BTreeSet::from([old, new]));
    }

    /// A cut while another thread removes files (as the reaper and a checkpoint's rename do in
    /// the server) failed when a file the walk listed was gone before it was read: a process
    /// cut through `YAAD_POWERCUT` aborted without an image.
    #[test]
    fn a_file_removed_while_the_image_is_built_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let sim = register(dir.path(), b"boot-d").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let (dir, stop) = (dir.path().to_path_buf(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let _ = fs::write(dir.join(format!("f{}", i % 64)), [1u8; 100]);
                    let _ = fs::remove_file(dir.join(format!("f{}", (i + 32) % 64)));
                    i += 1;
                }
            })
        };
        let out = tempfile::tempdir().unwrap();
        let cuts =
            (0..100).try_for_each(|seed| sim.cut_now(seed, &out.path().join(seed.to_string())));
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
        cuts.unwrap();
    }

    /// Two syncs of one file in flight at once (two sync threads): the one that started
    /// later copied the newer bytes; when the earlier one completed last, its older copy
    /// replaced them, and a cut lost bytes a completed sync had made durable.
    #[test]
    fn an_earlier_sync_completing_last_keeps_the_newer_bytes_durable() {
        let dir = tempfile::tempdir().unwrap();
        let sim = register(dir.path(), b"boot-e").unwrap();
        let f = File::create(dir.path().join("h")).unwrap();
        fsio::sync_dir(dir.path()).unwrap();
        f.write_all_at(&[1; PAGE], 0).unwrap();
        let first = before_file_sync(&f).unwrap();
        f.write_all_at(&[2; PAGE], 0).unwrap();
        let second = before_file_sync(&f).unwrap();
        second.commit();
        first.commit();
        assert!(
            outcomes(&sim, "h", 0..64)
                .iter()
                .all(|o| o.as_deref() == Some(&[2; PAGE][..]))
        );
    }

    #[test]
    fn a_planned_cut_fires_inside_the_nth_sync() {
        let dir = tempfile::tempdir().unwrap();
        let sim = register(dir.path(), b"boot-b").unwrap();
        let out = tempfile::tempdir().unwrap();
        sim.plan_cut(2, 7, out.path().join("cut"));
        let f = File::create(dir.path().join("g")).unwrap();
        f.write_all_at(b"one", 0).unwrap();
        fsio::sync_file(&f).unwrap();
        fsio::sync_dir(dir.path()).unwrap();
        assert!(sim.take_cut().is_some_and(|p| p.is_dir()));
        assert_eq!(sim.take_cut(), None);
        drop(sim);
        assert_eq!(
            fsio::boot_id(dir.path()).map(|b| b == b"boot-b"),
            Some(false)
        );
    }
}
