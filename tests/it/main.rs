mod cgroup_parse;
mod cgroup_real;
mod cgroup_support;
mod cgroup_v2_tree;
mod netns;
