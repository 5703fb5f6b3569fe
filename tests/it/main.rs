mod cgroup_path;
mod cli;
mod delivery;
mod node;
mod support;
