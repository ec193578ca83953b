//! Decode, orient and resample photos for the ingest pipeline (no FFI).
