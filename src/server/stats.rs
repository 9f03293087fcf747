//! The command counters, and the YAML bodies of `stats`, `stats-job`, `stats-tube` and the tube
//! lists, with beanstalkd 1.12's keys in its order. yaad's own keys come only at the end of the
//! global `stats`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::lock_stats::HOLD_KINDS;
use crate::hub::{HubStats, JobStats, TubeStats};
use crate::protocol::Command;

/// The commands counted in global stats, in the order of their `cmd-*` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    Put,
    Peek,
    PeekReady,
    PeekDelayed,
    PeekBuried,
    Reserve,
    ReserveWithTimeout,
    Delete,
    Release,
    Use,
    Watch,
    Ignore,
    Bury,
    Kick,
    Touch,
    Stats,
    StatsJob,
    StatsTube,
    ListTubes,
    ListTubeUsed,
    ListTubesWatched,
    PauseTube,
}

impl Cmd {
    /// The counter `cmd` bumps. `reserve-job`, `kick-job` and `quit` have none (beanstalkd
    /// 1.12's stats have no `cmd-*` key for them).
    pub fn of(cmd: &Command) -> Option<Cmd> {
        Some(match cmd {
            Command::Put { .. } => Cmd::Put,
            Command::Use(_) => Cmd::Use,
            Command::Reserve => Cmd::Reserve,
            Command::ReserveWithTimeout(_) => Cmd::ReserveWithTimeout,
            Command::Delete(_) => Cmd::Delete,
            Command::Release { .. } => Cmd::Release,
            Command::Bury { .. } => Cmd::Bury,
            Command::Touch(_) => Cmd::Touch,
            Command::Watch(_) => Cmd::Watch,
            Command::Ignore(_) => Cmd::Ignore,
            Command::Peek(_) => Cmd::Peek,
            Command::PeekReady => Cmd::PeekReady,
            Command::PeekDelayed => Cmd::PeekDelayed,
            Command::PeekBuried => Cmd::PeekBuried,
            Command::Kick(_) => Cmd::Kick,
            Command::StatsJob(_) => Cmd::StatsJob,
            Command::StatsTube(_) => Cmd::StatsTube,
            Command::Stats => Cmd::Stats,
            Command::ListTubes => Cmd::ListTubes,
            Command::ListTubeUsed => Cmd::ListTubeUsed,
            Command::ListTubesWatched => Cmd::ListTubesWatched,
            Command::PauseTube { .. } => Cmd::PauseTube,
            Command::ReserveJob(_) | Command::KickJob(_) | Command::Quit => return None,
            // yaad's own commands: counted only in metrics (`observe::COMMANDS`).
            Command::PutNamed { .. }
            | Command::DeleteName(_)
            | Command::PeekName(_)
            | Command::KickName(_)
            | Command::TouchName(_) => return None,
        })
    }
}

/// The `cmd-*` keys of global stats, by [`Cmd`].
const CMD_KEYS: [&str; 22] = [
    "cmd-put",
    "cmd-peek",
    "cmd-peek-ready",
    "cmd-peek-delayed",
    "cmd-peek-buried",
    "cmd-reserve",
    "cmd-reserve-with-timeout",
    "cmd-delete",
    "cmd-release",
    "cmd-use",
    "cmd-watch",
    "cmd-ignore",
    "cmd-bury",
    "cmd-kick",
    "cmd-touch",
    "cmd-stats",
    "cmd-stats-job",
    "cmd-stats-tube",
    "cmd-list-tubes",
    "cmd-list-tube-used",
    "cmd-list-tubes-watched",
    "cmd-pause-tube",
];

/// Server-wide command counters (the hub does not see commands).
#[derive(Debug, Default)]
pub struct CmdCounters([AtomicU64; 22]);

impl CmdCounters {
    pub fn count(&self, cmd: Cmd) {
        self.0[cmd as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> [u64; 22] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// Facts about the process for global stats.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessInfo {
    pub max_job_size: u32,
    pub pid: u32,
    pub version: &'static str,
    pub rusage_utime: f64,
    pub rusage_stime: f64,
    pub uptime: u64,
    pub draining: bool,
    /// 16 hex digits, random per process.
    pub id: String,
    pub hostname: String,
    pub os: String,
    pub platform: String,
    pub mode: &'static str,
    /// Hub lock acquisitions, contended acquisitions, µs held, µs waited
    /// (`LockStats::snapshot`).
    pub hub_lock: [u64; 4],
    /// Per kind of hold (`HOLD_KINDS`): hub lock holds of at least 1 ms and at least 5 ms.
    pub long_holds: [[u64; 2]; HOLD_KINDS.len()],
    /// Per kind: the timer thread's holds whose thread CPU time reached 1 ms and 5 ms.
    pub timer_cpu_holds: [[u64; 2]; HOLD_KINDS.len()],
    /// Group-commit syncs (`-f 0`, `-f MS`): completed, changes they made durable, µs spent.
    pub syncs: [u64; 3],
}

/// `stats-job`.
pub fn job_yaml(s: &JobStats) -> Vec<u8> {
    let mut y = String::from("---\n");
    // Writing into a String cannot fail.
    let _ = write!(
        y,
        "id: {}\ntube: {}\nstate: {}\npri: {}\nage: {}\ndelay: {}\nttr: {}\ntime-left: {}\n\
         file: {}\nreserves: {}\ntimeouts: {}\nreleases: {}\nburies: {}\nkicks: {}\n",
        s.id,
        s.tube,
        s.state,
        s.pri,
        s.age,
        s.delay,
        s.ttr,
        s.time_left,
        s.file,
        s.reserves,
        s.timeouts,
        s.releases,
        s.buries,
        s.kicks
    );
    // A named job's only difference from beanstalkd's reply: one more key, last.
    if let Some(name) = &s.name {
        let _ = writeln!(y, "name: {name}");
    }
    y.into_bytes()
}

/// `stats-tube`.
pub fn tube_yaml(s: &TubeStats) -> Vec<u8> {
    let mut y = String::from("---\n");
    let _ = write!(
        y,
        "name: {}\ncurrent-jobs-urgent: {}\ncurrent-jobs-ready: {}\ncurrent-jobs-reserved: {}\n\
         current-jobs-delayed: {}\ncurrent-jobs-buried: {}\ntotal-jobs: {}\ncurrent-using: {}\n\
         current-watching: {}\ncurrent-waiting: {}\ncmd-delete: {}\ncmd-pause-tube: {}\n\
         pause: {}\npause-time-left: {}\n",
        s.name,
        s.current_jobs_urgent,
        s.current_jobs_ready,
        s.current_jobs_reserved,
        s.current_jobs_delayed,
        s.current_jobs_buried,
        s.total_jobs,
        s.current_using,
        s.current_watching,
        s.current_waiting,
        s.cmd_delete,
        s.cmd_pause_tube,
        s.pause,
        s.pause_time_left
    );
    y.into_bytes()
}

/// `list-tubes` and `list-tubes-watched`.
pub fn list_yaml<S: AsRef<str>>(names: &[S]) -> Vec<u8> {
    let mut y = String::from("---\n");
    for n in names {
        y.push_str("- ");
        y.push_str(n.as_ref());
        y.push('\n');
    }
    y.into_bytes()
}

/// `stats`: the hub's figures, the command counters ([`CmdCounters::snapshot`]) and the
/// process's.
pub fn global_yaml(h: &HubStats, cmds: &[u64; 22], p: &ProcessInfo) -> Vec<u8> {
    let mut y = String::from("---\n");
    let _ = write!(
        y,
        "current-jobs-urgent: {}\ncurrent-jobs-ready: {}\ncurrent-jobs-reserved: {}\n\
         current-jobs-delayed: {}\ncurrent-jobs-buried: {}\n",
        h.current_jobs_urgent,
        h.current_jobs_ready,
        h.current_jobs_reserved,
        h.current_jobs_delayed,
        h.current_jobs_buried
    );
    for (k, v) in CMD_KEYS.iter().zip(cmds) {
        let _ = writeln!(y, "{k}: {v}");
    }
    let _ = write!(
        y,
        "job-timeouts: {}\ntotal-jobs: {}\nmax-job-size: {}\ncurrent-tubes: {}\n\
         current-connections: {}\ncurrent-producers: {}\ncurrent-workers: {}\n\
         current-waiting: {}\ntotal-connections: {}\npid: {}\nversion: \"{}\"\n\
         rusage-utime: {:.6}\nrusage-stime: {:.6}\nuptime: {}\n\
         binlog-oldest-index: 0\nbinlog-current-index: 0\nbinlog-records-migrated: 0\n\
         binlog-records-written: 0\nbinlog-max-size: 0\ndraining: {}\nid: {}\nhostname: {}\n\
         os: {}\nplatform: {}\n",
        h.job_timeouts,
        h.total_jobs,
        p.max_job_size,
        h.current_tubes,
        h.current_connections,
        h.current_producers,
        h.current_workers,
        h.current_waiting,
        h.total_connections,
        p.pid,
        p.version,
        p.rusage_utime,
        p.rusage_stime,
        p.uptime,
        p.draining || h.draining,
        p.id,
        p.hostname,
        p.os,
        p.platform
    );
    // yaad's own figures.
    let _ = write!(
        y,
        "mode: {}\nspokes: {}\nsegments-open: {}\ncorrupt-records-skipped: {}\ndata-bytes: {}\n\
         hub-lock-acquisitions: {}\nhub-lock-contended: {}\nhub-lock-held-us: {}\n\
         hub-lock-wait-us: {}\n",
        p.mode,
        h.spokes,
        h.segments_open,
        h.corrupt_records_skipped,
        h.data_bytes,
        p.hub_lock[0],
        p.hub_lock[1],
        p.hub_lock[2],
        p.hub_lock[3]
    );
    for (kind, [over_1ms, over_5ms]) in HOLD_KINDS.iter().zip(p.long_holds) {
        let _ = write!(
            y,
            "hub-lock-holds-over-1ms-{kind}: {over_1ms}\nhub-lock-holds-over-5ms-{kind}: {over_5ms}\n"
        );
    }
    for (kind, [over_1ms, over_5ms]) in HOLD_KINDS.iter().zip(p.timer_cpu_holds) {
        let _ = write!(
            y,
            "hub-lock-timer-cpu-over-1ms-{kind}: {over_1ms}\nhub-lock-timer-cpu-over-5ms-{kind}: {over_5ms}\n"
        );
    }
    let [syncs, changes, us] = p.syncs;
    let _ = write!(
        y,
        "syncs: {syncs}\nsync-changes: {changes}\nsync-us: {us}\n"
    );
    y.into_bytes()
}

/// User and system CPU time of this process in seconds (Linux: from /proc; elsewhere zeros).
pub fn rusage() -> (f64, f64) {
    // Field 14 and 15 of /proc/self/stat, in clock ticks (USER_HZ, 100 on Linux).
    const TICKS_PER_SECOND: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // The command name (field 2) may contain spaces; fields are counted after its ')'.
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return (0.0, 0.0);
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .map_or(0.0, |t| t / TICKS_PER_SECOND)
    };
    // After ')': field 3 (state) has index 0, so field 14 is index 11.
    (tick(11), tick(12))
}

/// The host name, OS version and machine, as `uname` would give them.
pub fn host_facts() -> (String, String, String) {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    (
        read("/proc/sys/kernel/hostname"),
        read("/proc/sys/kernel/version"),
        std::env::consts::ARCH.to_string(),
    )
}

/// A random 64-bit instance id in hex.
pub fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_and_tube_yaml_match_beanstalkd() {
        let j = JobStats {
            id: 5,
            tube: "default".into(),
            state: "ready",
            pri: 0,
            age: 23,
            delay: 0,
            ttr: 1,
            time_left: 0,
            file: 0,
            reserves: 0,
            timeouts: 0,
            releases: 0,
            buries: 0,
            kicks: 0,
            name: None,
        };
        // Captured from beanstalkd 1.12 (`stats-job 5`), body only.
        assert_eq!(
            job_yaml(&j),
            b"---\nid: 5\ntube: default\nstate: ready\npri: 0\nage: 23\ndelay: 0\nttr: 1\n\
time-left: 0\nfile: 0\nreserves: 0\ntimeouts: 0\nreleases: 0\nburies: 0\nkicks: 0\n"
        );
        assert_eq!(job_yaml(&j).len(), 144);
        let t = TubeStats {
            name: "default".into(),
            current_jobs_urgent: 6,
            current_jobs_ready: 6,
            current_jobs_reserved: 0,
            current_jobs_delayed: 0,
            current_jobs_buried: 0,
            total_jobs: 7,
            current_using: 1,
            current_watching: 1,
            current_waiting: 0,
            cmd_delete: 1,
            cmd_pause_tube: 3,
            pause: 0,
            pause_time_left: 0,
        };
        let y = tube_yaml(&t);
        assert_eq!(y.len(), 265);
        assert!(y.starts_with(b"---\nname: default\ncurrent-jobs-urgent: 6\n"));
        assert!(y.ends_with(b"cmd-pause-tube: 3\npause: 0\npause-time-left: 0\n"));
    }

    #[test]
    fn each_command_bumps_the_counter_of_its_own_key() {
        let tube = || String::from("t");
        let all = [
            Command::Put {
                pri: 0,
                delay: 0,
                ttr: 1,
                body: bytes::Bytes::new(),
            },
            Command::Use(tube()),
            Command::Reserve,
            Command::ReserveWithTimeout(1),
            Command::ReserveJob(1),
            Command::Delete(1),
            Command::Release {
                id: 1,
                pri: 0,
                delay: 0,
            },
            Command::Bury { id: 1, pri: 0 },
            Command::Touch(1),
            Command::Watch(tube()),
            Command::Ignore(tube()),
            Command::Peek(1),
            Command::PeekReady,
            Command::PeekDelayed,
            Command::PeekBuried,
            Command::Kick(1),
            Command::KickJob(1),
            Command::StatsJob(1),
            Command::StatsTube(tube()),
            Command::Stats,
            Command::ListTubes,
            Command::ListTubeUsed,
            Command::ListTubesWatched,
            Command::PauseTube {
                tube: tube(),
                delay: 0,
            },
            Command::Quit,
        ];
        let mut keys = Vec::new();
        for cmd in &all {
            let name = crate::observe::command_name(cmd);
            match Cmd::of(cmd) {
                Some(k) => {
                    assert_eq!(CMD_KEYS[k as usize], format!("cmd-{name}"));
                    keys.push(k as usize);
                }
                None => assert!(
                    ["reserve-job", "kick-job", "quit"].contains(&name),
                    "{name}"
                ),
            }
        }
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), CMD_KEYS.len());
    }

    #[test]
    fn list_yaml_format() {
        assert_eq!(list_yaml(&["default"]), b"---\n- default\n");
        assert_eq!(list_yaml(&["a", "b"]), b"---\n- a\n- b\n");
    }

    #[test]
    fn global_yaml_keys_in_order() {
        let h = HubStats {
            current_jobs_urgent: 1,
            current_jobs_ready: 2,
            current_jobs_reserved: 3,
            current_jobs_delayed: 4,
            current_jobs_buried: 5,
            job_timeouts: 6,
            total_jobs: 7,
            current_tubes: 8,
            current_connections: 9,
            current_producers: 10,
            current_workers: 11,
            current_waiting: 12,
            total_connections: 13,
            draining: false,
            spokes: 14,
            segments_open: 15,
            corrupt_records_skipped: 16,
            data_bytes: 17,
            resident_jobs: 0,
        };
        let c = CmdCounters::default();
        c.count(Cmd::Put);
        c.count(Cmd::Put);
        c.count(Cmd::PauseTube);
        let p = ProcessInfo {
            max_job_size: 65535,
            pid: 42,
            version: "0.1.0",
            rusage_utime: 0.5,
            rusage_stime: 0.25,
            uptime: 9,
            draining: true,
            id: "00000000000000ab".into(),
            hostname: "h".into(),
            os: "#1".into(),
            platform: "x86_64".into(),
            mode: "mem",
            hub_lock: [18, 19, 20, 21],
            long_holds: [[22, 23], [0, 0], [0, 0], [0, 0], [0, 0], [24, 0]],
            timer_cpu_holds: [[0, 0], [0, 0], [0, 0], [0, 0], [28, 0], [0, 0]],
            syncs: [25, 26, 27],
        };
        let y = String::from_utf8(global_yaml(&h, &c.snapshot(), &p)).unwrap();
        let keys: Vec<&str> = y
            .lines()
            .skip(1)
            .map(|l| l.split(':').next().unwrap())
            .collect();
        // beanstalkd 1.12's keys, in its order, then yaad's.
        let want = "current-jobs-urgent current-jobs-ready current-jobs-reserved \
            current-jobs-delayed current-jobs-buried cmd-put cmd-peek cmd-peek-ready \
            cmd-peek-delayed cmd-peek-buried cmd-reserve cmd-reserve-with-timeout cmd-delete \
            cmd-release cmd-use cmd-watch cmd-ignore cmd-bury cmd-kick cmd-touch cmd-stats \
            cmd-stats-job cmd-stats-tube cmd-list-tubes cmd-list-tube-used \
            cmd-list-tubes-watched cmd-pause-tube job-timeouts total-jobs max-job-size \
            current-tubes current-connections current-producers current-workers \
            current-waiting total-connections pid version rusage-utime rusage-stime uptime \
            binlog-oldest-index binlog-current-index binlog-records-migrated \
            binlog-records-written binlog-max-size draining id hostname os platform \
            mode spokes segments-open corrupt-records-skipped data-bytes \
            hub-lock-acquisitions hub-lock-contended hub-lock-held-us hub-lock-wait-us";
        let mut want: Vec<String> = want.split_whitespace().map(String::from).collect();
        for kind in HOLD_KINDS {
            want.push(format!("hub-lock-holds-over-1ms-{kind}"));
            want.push(format!("hub-lock-holds-over-5ms-{kind}"));
        }
        for kind in HOLD_KINDS {
            want.push(format!("hub-lock-timer-cpu-over-1ms-{kind}"));
            want.push(format!("hub-lock-timer-cpu-over-5ms-{kind}"));
        }
        want.extend(["syncs", "sync-changes", "sync-us"].map(String::from));
        assert_eq!(keys, want);
        assert!(y.contains("\ncmd-put: 2\ncmd-peek: 0\n"));
        assert!(y.contains("\ncmd-pause-tube: 1\njob-timeouts: 6\n"));
        assert!(
            y.contains("\nversion: \"0.1.0\"\nrusage-utime: 0.500000\nrusage-stime: 0.250000\n")
        );
        assert!(y.contains("\ndraining: true\nid: 00000000000000ab\n"));
        assert!(y.contains(
            "corrupt-records-skipped: 16\ndata-bytes: 17\nhub-lock-acquisitions: 18\n\
             hub-lock-contended: 19\nhub-lock-held-us: 20\nhub-lock-wait-us: 21\n"
        ));
        assert!(y.contains(
            "\nhub-lock-holds-over-1ms-create: 22\nhub-lock-holds-over-5ms-create: 23\n\
             hub-lock-holds-over-1ms-load: 0\n"
        ));
        assert!(y.contains(
            "hub-lock-holds-over-1ms-other: 24\nhub-lock-holds-over-5ms-other: 0\n\
             hub-lock-timer-cpu-over-1ms-create: 0\n"
        ));
        assert!(y.contains("\nhub-lock-timer-cpu-over-1ms-split: 28\n"));
        assert!(y.ends_with(
            "hub-lock-timer-cpu-over-5ms-other: 0\nsyncs: 25\nsync-changes: 26\nsync-us: 27\n"
        ));
    }

    #[test]
    fn process_facts() {
        let (u, s) = rusage();
        assert!(u >= 0.0 && s >= 0.0);
        let id = instance_id();
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!host_facts().2.is_empty());
    }
}
