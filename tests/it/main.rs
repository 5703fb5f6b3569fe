mod cgroup_path;
mod node;
