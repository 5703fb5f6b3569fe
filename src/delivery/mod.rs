//! Bounded queue between the cycle and the sink, with retries.
