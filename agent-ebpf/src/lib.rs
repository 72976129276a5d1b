#![no_std]
//! Marker library so cargo tracks the eBPF crate as a build dependency of the agent.
