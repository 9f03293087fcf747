//! The scheduler: a hub rotating through time-bucketed spokes.
