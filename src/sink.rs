//! Where a streaming producer (the WebM scanner, the recording splicer) hands what it
//! makes, one item at a time, as it makes it: so that nothing collects a whole input's
//! worth of output unless the caller wants it to. A `Vec<T>` collects; a closure
//! `FnMut(T)` handles each item at once.

pub trait Sink<T> {
    fn put(&mut self, item: T);
}

impl<T> Sink<T> for Vec<T> {
    fn put(&mut self, item: T) {
        self.push(item);
    }
}

impl<T, F: FnMut(T)> Sink<T> for F {
    fn put(&mut self, item: T) {
        self(item);
    }
}
