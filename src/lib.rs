//! yaad: a persistent, memory-mapped delayed-job scheduler that speaks the beanstalkd protocol.
//!
//! Layers, bottom up: [`segment`] (on-disk job records), [`store`] (the records of every job:
//! spokes' segments, id index, durability), [`hub`] (the clock-free scheduler), [`protocol`]
//! (pure wire decoding and encoding), [`server`] (tokio networking and the CLI).
#![deny(unsafe_code)]

pub mod bench;
pub mod hub;
pub mod observe;
pub mod protocol;
pub mod segment;
pub mod server;
pub mod store;
