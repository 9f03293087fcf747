//! The replies of hub results: what a connection sends, and what the thread that hands a job
//! to a blocked reserve sends for it (`core::Waiter`).

use crate::hub::{HubError, JobView, PutNamed, ReleaseOutcome, ReserveOutcome};
use crate::protocol::Response;

/// `RESERVED id bytes` with the job.
pub fn reserved(job: JobView) -> Response {
    Response::Reserved {
        id: job.id,
        body: job.body,
    }
}

/// The reply to `put-named` / `put-replace`.
pub fn put_named_reply(o: PutNamed) -> Response {
    match o {
        PutNamed::Inserted(id) => Response::Inserted(id),
        PutNamed::Exists(id) => Response::Exists(id),
        PutNamed::Replaced(id) => Response::Replaced(id),
        PutNamed::Busy(id) => Response::Busy(id),
    }
}

/// A peek's reply: `FOUND id bytes` with the job, or `NOT_FOUND`.
pub fn found(job: Option<JobView>) -> Response {
    match job {
        Some(j) => Response::Found {
            id: j.id,
            body: j.body,
        },
        None => Response::NotFound,
    }
}

/// The reply of a reserve's outcome (`Wait`, which has no reply of its own, answers
/// `TIMED_OUT`).
pub fn reserve_reply(o: ReserveOutcome) -> Response {
    match o {
        ReserveOutcome::Reserved(job) => reserved(job),
        ReserveOutcome::DeadlineSoon => Response::DeadlineSoon,
        ReserveOutcome::TimedOut | ReserveOutcome::Wait => Response::TimedOut,
    }
}

/// `release`: `RELEASED`, or `BURIED` when the job was buried instead.
pub fn released(o: ReleaseOutcome) -> Response {
    match o {
        ReleaseOutcome::Released => Response::Released,
        ReleaseOutcome::Buried => Response::Buried,
    }
}

/// The reply `ok` makes of a call's value, else the error's reply.
pub fn result_reply<T>(r: Result<T, HubError>, ok: impl FnOnce(T) -> Response) -> Response {
    match r {
        Ok(v) => ok(v),
        Err(e) => error_reply(e),
    }
}

/// `ok` for a call that returns nothing, else the error's reply.
pub fn unit_reply(r: Result<(), HubError>, ok: Response) -> Response {
    match r {
        Ok(()) => ok,
        Err(e) => error_reply(e),
    }
}

/// The reply of a hub error; an internal one is logged (its message is not sent).
pub fn error_reply(e: HubError) -> Response {
    match e {
        HubError::NotFound => Response::NotFound,
        HubError::NotIgnored => Response::NotIgnored,
        HubError::Draining => Response::Draining,
        HubError::OutOfMemory => Response::OutOfMemory,
        HubError::Internal(msg) => {
            tracing::error!("internal error: {msg}");
            Response::InternalError
        }
    }
}
