mod cgroup_path;
mod cli;
mod delivery;
mod e2e;
mod faults;
mod node;
mod support;
