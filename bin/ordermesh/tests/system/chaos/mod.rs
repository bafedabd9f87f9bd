//! Faults between real hosts: the cluster the partition tests and the
//! Jepsen-style run share.

pub mod cluster;
