//! The `unseen` binary itself, where a test needs it as a program: the demo
//! and the cluster benchmark start a local cluster whose scheduler and
//! executors are processes of this binary.

mod cluster;
