//! The shapes most attributes share: text, opaque bytes, fixed-size bytes, empty, integer.
//! Each macro declares the type and its [`Attr`](super::Attr) impl; the caller's scope provides
//! `Attr`, `AttrType`, `AttrError`, `TransactionId` and the helpers the shape uses.

macro_rules! text_attr {
    ($(#[$doc:meta])* $name:ident, $type:ident, $max_bytes:expr, $max_chars:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name<'a>(pub &'a str);

        impl<'a> $name<'a> {
            /// Largest value in bytes the RFC allows.
            pub const MAX_BYTES: usize = $max_bytes;
        }

        impl<'a> Attr<'a> for $name<'a> {
            const TYPE: AttrType = AttrType::$type;
            fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
                decode_text(Self::TYPE, value, $max_bytes, $max_chars).map($name)
            }
            fn encoded_len(&self) -> usize {
                self.0.len()
            }
            fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
                out.copy_from_slice(self.0.as_bytes())
            }
        }
    };
}

macro_rules! bytes_attr {
    ($(#[$doc:meta])* $name:ident, $type:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<'a>(pub &'a [u8]);

        impl<'a> Attr<'a> for $name<'a> {
            const TYPE: AttrType = AttrType::$type;
            fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
                Ok($name(value))
            }
            fn encoded_len(&self) -> usize {
                self.0.len()
            }
            fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
                out.copy_from_slice(self.0)
            }
        }
    };
}

macro_rules! fixed_bytes_attr {
    ($(#[$doc:meta])* $name:ident, $type:ident, $n:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<'a>(pub &'a [u8; $n]);

        impl<'a> Attr<'a> for $name<'a> {
            const TYPE: AttrType = AttrType::$type;
            fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
                fixed(Self::TYPE, value).map($name)
            }
            fn encoded_len(&self) -> usize {
                $n
            }
            fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
                out.copy_from_slice(self.0)
            }
        }
    };
}

macro_rules! empty_attr {
    ($(#[$doc:meta])* $name:ident, $type:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name;

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = AttrType::$type;
            fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
                if value.is_empty() {
                    Ok($name)
                } else {
                    Err(invalid_len(Self::TYPE, value.len()))
                }
            }
            fn encoded_len(&self) -> usize {
                0
            }
            fn encode(&self, _out: &mut [u8], _tid: &TransactionId) {}
        }
    };
}

macro_rules! uint_attr {
    ($(#[$doc:meta])* $name:ident, $type:ident, $ty:ty, $n:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub $ty);

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = AttrType::$type;
            fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
                let b: &[u8; $n] = fixed(Self::TYPE, value)?;
                Ok($name(<$ty>::from_be_bytes(*b)))
            }
            fn encoded_len(&self) -> usize {
                $n
            }
            fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
                out.copy_from_slice(&self.0.to_be_bytes())
            }
        }
    };
}
