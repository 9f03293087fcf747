//! The figures `stats`, `stats-tube` and `stats-job` show.

use super::job::{FarInfo, Phase};
use super::{Hub, HubStats, JobStats, Micros, TubeStats, secs_floor};
use crate::segment::Segment;

impl<S: Segment> Hub<S> {
    /// `stats-job`: None if no such job (far jobs are read from their record).
    pub fn stats_job(&mut self, id: u64, now: Micros) -> Option<JobStats> {
        self.advance(now);
        let now = self.now;
        if let Some(job) = self.jobs.get(&id) {
            let (state, time_left) = match job.phase {
                Phase::Delayed => ("delayed", job.trigger_at.saturating_sub(now)),
                Phase::Ready => ("ready", 0),
                Phase::Reserved { deadline, .. } => ("reserved", deadline.saturating_sub(now)),
                Phase::Buried { .. } => ("buried", 0),
            };
            return Some(JobStats {
                id,
                tube: job.tube.to_string(),
                state,
                pri: job.pri,
                age: secs_floor(now.saturating_sub(job.created_at)),
                delay: u64::from(job.delay_s),
                ttr: u64::from(job.ttr_s),
                time_left: secs_floor(time_left),
                file: 0,
                reserves: job.counters.reserves.into(),
                timeouts: job.counters.timeouts.into(),
                releases: job.counters.releases.into(),
                buries: job.counters.buries.into(),
                kicks: job.counters.kicks.into(),
                name: job
                    .name
                    .as_ref()
                    .map(|n| String::from_utf8_lossy(n).into_owned()),
            });
        }
        let far = self.find_far(id).ok()??;
        let m = &far.meta;
        let info = self.far_info.get(&id).copied().unwrap_or(FarInfo {
            delay_s: u32::try_from(secs_floor(m.trigger_at.saturating_sub(m.created_at)))
                .unwrap_or(u32::MAX),
        });
        Some(JobStats {
            id,
            tube: String::from_utf8_lossy(&m.tube).into_owned(),
            state: "delayed",
            pri: m.slot.priority,
            age: secs_floor(now.saturating_sub(m.created_at)),
            delay: u64::from(info.delay_s),
            ttr: u64::from(m.ttr),
            time_left: secs_floor(m.trigger_at.saturating_sub(now)),
            file: 0,
            reserves: m.slot.counters.reserves.into(),
            timeouts: m.slot.counters.timeouts.into(),
            releases: m.slot.counters.releases.into(),
            buries: m.slot.counters.buries.into(),
            kicks: m.slot.counters.kicks.into(),
            name: (!m.name.is_empty()).then(|| String::from_utf8_lossy(&m.name).into_owned()),
        })
    }

    /// `stats-tube`: None if the tube does not exist.
    pub fn stats_tube(&self, tube: &str, now: Micros) -> Option<TubeStats> {
        let t = self.tubes.get(tube)?;
        Some(TubeStats {
            name: t.name.to_string(),
            current_jobs_urgent: t.urgent,
            current_jobs_ready: t.ready.len() as u64,
            current_jobs_reserved: t.reserved,
            current_jobs_delayed: t.delayed.len() as u64 + self.store.far_delayed(tube),
            current_jobs_buried: t.buried.len() as u64,
            total_jobs: t.total_jobs,
            current_using: t.using,
            current_watching: t.watching,
            current_waiting: t.waiters.len() as u64,
            cmd_delete: t.cmd_delete,
            cmd_pause_tube: t.cmd_pause_tube,
            pause: t.pause.map_or(0, |p| u64::from(p.delay_s)),
            pause_time_left: t
                .pause
                .map_or(0, |p| secs_floor(p.until.saturating_sub(now.max(self.now)))),
        })
    }

    /// The hub's part of `stats`, plus yaad's own figures.
    pub fn stats(&self, _now: Micros) -> HubStats {
        let store = self.store.stats();
        let mut s = HubStats {
            current_jobs_urgent: 0,
            current_jobs_ready: 0,
            current_jobs_reserved: 0,
            current_jobs_delayed: 0,
            current_jobs_buried: 0,
            job_timeouts: self.job_timeouts,
            total_jobs: self.total_jobs,
            current_tubes: self.tubes.len() as u64,
            current_connections: self.conns.len() as u64,
            current_producers: self.conns.values().filter(|c| c.producer).count() as u64,
            current_workers: self.conns.values().filter(|c| c.worker).count() as u64,
            current_waiting: self.conns.values().filter(|c| c.wait.is_some()).count() as u64,
            total_connections: self.total_connections,
            draining: self.draining,
            spokes: store.spokes,
            segments_open: store.spokes_open,
            corrupt_records_skipped: store.corrupt_records_skipped,
            data_bytes: store.data_bytes,
            resident_jobs: self.jobs.len() as u64,
        };
        for t in self.tubes.values() {
            s.current_jobs_urgent += t.urgent;
            s.current_jobs_ready += t.ready.len() as u64;
            s.current_jobs_reserved += t.reserved;
            s.current_jobs_delayed += t.delayed.len() as u64 + self.store.far_delayed(&t.name);
            s.current_jobs_buried += t.buried.len() as u64;
        }
        s
    }
}
