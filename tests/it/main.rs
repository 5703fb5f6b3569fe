mod cgroup_path;
mod cli;
mod node;
