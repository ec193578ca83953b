//! Vector storage for images and their objects.
