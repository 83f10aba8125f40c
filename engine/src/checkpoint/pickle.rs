//! A small pickle virtual machine for the subset `torch.save` emits (protocols 2 to 4, binary
//! opcodes only). It knows a handful of globals (OrderedDict, torch's tensor rebuilders, storage
//! classes, dtypes) and turns tensors into [`TensorSpec`]s; storages are resolved later, so
//! tensors the caller skips never touch their data.

use std::cell::RefCell;
use std::rc::Rc;

use super::{CheckpointError, StoredDType};

/// Where a tensor's elements live: a storage entry of the archive and its element type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StorageRef {
    pub key: String,
    pub dtype: StoredDType,
}

/// A tensor as the pickle describes it, before its storage is looked up.
#[derive(Clone, Debug)]
pub(crate) struct TensorSpec {
    pub storage: Rc<StorageRef>,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

/// Callables and classes the VM understands; anything else is kept by name and fails when called.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Global {
    OrderedDict,
    Dict,
    TorchSize,
    RebuildTensor,
    RebuildTensorV2,
    RebuildTensorV3,
    RebuildParameter,
    RebuildParameterWithState,
    RebuildFromTypeV2,
    Storage(StoredDType),
    /// `torch.UntypedStorage` / `torch.storage.UntypedStorage`: raw bytes, typed by the rebuilder.
    UntypedStorage,
    DType(StoredDType),
    /// A class only ever passed around (e.g. `torch.nn.parameter.Parameter` to `_rebuild_from_type_v2`).
    Other(Rc<str>),
}

fn resolve_global(module: &str, name: &str) -> Global {
    use StoredDType as D;
    let storage = |n: &str| match n {
        "FloatStorage" => Some(D::F32),
        "HalfStorage" => Some(D::F16),
        "BFloat16Storage" => Some(D::BF16),
        "DoubleStorage" => Some(D::F64),
        "LongStorage" => Some(D::I64),
        "IntStorage" => Some(D::I32),
        "ShortStorage" => Some(D::I16),
        "CharStorage" => Some(D::I8),
        "ByteStorage" => Some(D::U8),
        "BoolStorage" => Some(D::Bool),
        _ => None,
    };
    let dtype = |n: &str| match n {
        "float32" | "float" => Some(D::F32),
        "float16" | "half" => Some(D::F16),
        "bfloat16" => Some(D::BF16),
        "float64" | "double" => Some(D::F64),
        "int64" | "long" => Some(D::I64),
        "int32" | "int" => Some(D::I32),
        "int16" | "short" => Some(D::I16),
        "int8" => Some(D::I8),
        "uint8" => Some(D::U8),
        "bool" => Some(D::Bool),
        _ => None,
    };
    match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("builtins" | "__builtin__", "dict") => Global::Dict,
        ("torch", "Size") => Global::TorchSize,
        ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor_v3") => Global::RebuildTensorV3,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
        ("torch._tensor", "_rebuild_from_type_v2") => Global::RebuildFromTypeV2,
        ("torch" | "torch.storage", "UntypedStorage") => Global::UntypedStorage,
        ("torch", n) | ("torch.cuda", n) if storage(n).is_some() => Global::Storage(storage(n).unwrap_or(D::U8)),
        ("torch", n) if dtype(n).is_some() => Global::DType(dtype(n).unwrap_or(D::F32)),
        _ => Global::Other(format!("{module}.{name}").into()),
    }
}

/// A Python dict: its items in insertion order.
pub(crate) type DictRef = Rc<RefCell<Vec<(Value, Value)>>>;

/// A pickled value. Containers are shared (`Rc`), as in Python: the memo and the stack refer to
/// the same dict, so items set after `BINPUT` are seen through `BINGET`. (No `Debug`: printing
/// a hostile, deeply nested value would recurse without bound.)
#[derive(Clone)]
#[allow(dead_code)] // Scalars are kept as read, though only ints name anything we use.
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(DictRef),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorSpec>),
}

impl Value {
    fn tuple(items: Vec<Value>) -> Value {
        Value::Tuple(Rc::new(items))
    }
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

/// Dropping nested containers iteratively: a hostile pickle can nest a million tuples, and the
/// default recursive drop would overflow the stack.
impl Drop for Value {
    fn drop(&mut self) {
        let mut pending: Vec<Value> = Vec::new();
        take_children(self, &mut pending);
        while let Some(mut v) = pending.pop() {
            take_children(&mut v, &mut pending);
        }
    }
}

/// Moves the children of the last reference to a container into `out`.
fn take_children(v: &mut Value, out: &mut Vec<Value>) {
    match v {
        Value::Tuple(rc) => {
            if let Some(items) = Rc::get_mut(rc) {
                out.append(items);
            }
        }
        Value::List(rc) if Rc::strong_count(rc) == 1 => out.append(&mut rc.borrow_mut()),
        Value::Dict(rc) if Rc::strong_count(rc) == 1 => {
            for (k, v) in rc.borrow_mut().drain(..) {
                out.push(k);
                out.push(v);
            }
        }
        _ => {}
    }
}

fn opcode_name(op: u8) -> &'static str {
    match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "not a pickle opcode",
    }
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being run, for error messages.
    op_at: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: std::collections::HashMap<u32, Value>,
    /// Bytes that copies of shared values may still take (see [`Vm::charge`]).
    copies_left: usize,
}

/// Most dimensions a tensor may have (torch's own limit for most operations is 25 or 64).
pub(crate) const MAX_RANK: usize = 64;

/// Runs a pickle to its STOP and returns the object it built.
pub(crate) fn unpickle(data: &[u8]) -> Result<Value, CheckpointError> {
    let copies_left = data.len().saturating_mul(16).saturating_add(1 << 16);
    let mut vm =
        Vm { data, pos: 0, op_at: 0, stack: Vec::new(), marks: Vec::new(), memo: Default::default(), copies_left };
    vm.run()
}

impl<'a> Vm<'a> {
    fn err(&self, msg: impl Into<String>) -> CheckpointError {
        CheckpointError::Pickle { offset: self.op_at, msg: msg.into() }
    }

    /// Pays for copying part of a shared value (a memoised list of pairs made into a dict, a
    /// memoised size tuple made into a shape). Sharing costs a pickle two bytes however large
    /// the value, so copies are bounded by a multiple of the pickle's length instead.
    fn charge(&mut self, bytes: usize) -> Result<(), CheckpointError> {
        self.copies_left = self.copies_left.checked_sub(bytes).ok_or_else(|| {
            self.err(format!(
                "copies of shared values would take more than {} bytes (16 times data.pkl): a pickle bomb?",
                self.data.len().saturating_mul(16).saturating_add(1 << 16)
            ))
        })?;
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CheckpointError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| self.err(format!("needs {n} more bytes but data.pkl ends (truncated?)")))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, CheckpointError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CheckpointError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, CheckpointError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, CheckpointError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn len64(&mut self) -> Result<usize, CheckpointError> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| self.err(format!("length {n} is too large")))
    }
    fn line(&mut self) -> Result<&'a str, CheckpointError> {
        let rest = &self.data[self.pos..];
        let nl = rest.iter().position(|&b| b == b'\n').ok_or_else(|| self.err("GLOBAL name without a newline"))?;
        let line = std::str::from_utf8(&rest[..nl]).map_err(|_| self.err("GLOBAL name is not UTF-8"))?;
        self.pos += nl + 1;
        Ok(line)
    }
    fn string(&mut self, n: usize) -> Result<Value, CheckpointError> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| self.err("string is not valid UTF-8"))?;
        Ok(Value::Str(s.into()))
    }

    fn pop(&mut self) -> Result<Value, CheckpointError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }
    fn top(&mut self) -> Result<&mut Value, CheckpointError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        let at = self.op_at;
        self.stack.last_mut().ok_or(CheckpointError::Pickle { offset: at, msg: "stack underflow".into() })
    }
    /// Pops everything above the last MARK, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Value>, CheckpointError> {
        let mark = self.marks.pop().ok_or_else(|| self.err("no MARK on the stack"))?;
        Ok(self.stack.split_off(mark))
    }
    fn pop_n(&mut self, n: usize) -> Result<Vec<Value>, CheckpointError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < floor + n {
            return Err(self.err("stack underflow"));
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }
    fn memo_get(&self, idx: u32) -> Result<Value, CheckpointError> {
        self.memo.get(&idx).cloned().ok_or_else(|| self.err(format!("memo entry {idx} was never stored")))
    }
    fn memo_put(&mut self, idx: u32) -> Result<(), CheckpointError> {
        let v = self.top()?.clone();
        self.memo.insert(idx, v);
        Ok(())
    }

    fn run(&mut self) -> Result<Value, CheckpointError> {
        loop {
            self.op_at = self.pos;
            let op = self.u8().map_err(|_| self.err("data.pkl ends before the STOP opcode (truncated?)"))?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(self.err(format!("pickle protocol {proto} is not supported")));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only.
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(self.err(format!("LONG1 integer of {n} bytes does not fit in 64 bits")));
                    }
                    // Little-endian two's complement, sign-extended from its top byte.
                    let mut v: i64 = if b.last().is_some_and(|&x| x & 0x80 != 0) { -1 } else { 0 };
                    for &byte in b.iter().rev() {
                        v = (v << 8) | byte as i64;
                    }
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.stack.push(Value::Float(f64::from_be_bytes(a)));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.len64()?;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                // Python 2 byte strings (protocol 1/2 pickles written by Python 2): latin-1.
                b'U' | b'T' => {
                    let n = if op == b'U' { self.u8()? as usize } else { self.u32()? as usize };
                    let b = self.take(n)?;
                    self.stack.push(Value::Str(b.iter().map(|&c| c as char).collect::<String>().into()));
                }
                b'C' | b'B' | 0x8e => {
                    let n = match op {
                        b'C' => self.u8()? as usize,
                        b'B' => self.u32()? as usize,
                        _ => self.len64()?,
                    };
                    let b = self.take(n)?;
                    self.stack.push(Value::Bytes(b.into()));
                }
                b')' => self.stack.push(Value::tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::tuple(items));
                }
                0x85..=0x87 => {
                    let items = self.pop_n((op - 0x84) as usize)?;
                    self.stack.push(Value::tuple(items));
                }
                b']' => self.stack.push(Value::List(Default::default())),
                b'}' => self.stack.push(Value::Dict(Default::default())),
                b'a' => {
                    let v = self.pop()?;
                    let list = self.list_top()?;
                    list.borrow_mut().push(v);
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.list_top()?;
                    list.borrow_mut().extend(items);
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let dict = self.dict_top()?;
                    dict_set(&dict, k, v);
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err(self.err("SETITEMS with an odd number of items"));
                    }
                    let dict = self.dict_top()?;
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        dict_set(&dict, k, v);
                    }
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let i = self.u32()?;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = u32::try_from(self.memo.len()).map_err(|_| self.err("memo too large"))?;
                    self.memo_put(i)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(resolve_global(module, name)));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&module, &name) {
                        (Value::Str(m), Value::Str(n)) => {
                            let g = resolve_global(m, n);
                            self.stack.push(Value::Global(g));
                        }
                        _ => return Err(self.err("STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let args = match &args {
                        Value::Tuple(t) => t.clone(),
                        other => return Err(self.err(format!("REDUCE arguments are a {}, not a tuple", other.kind()))),
                    };
                    let v = self.call(&func, &args)?;
                    self.stack.push(v);
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(&pid)?;
                    self.stack.push(v);
                }
                b'b' => {
                    // BUILD sets an object's state. Torch uses it for an OrderedDict's
                    // `_metadata` and for tensor attributes; neither matters for the weights.
                    let _state = self.pop()?;
                    let obj = self.top()?;
                    match obj {
                        Value::Dict(_) | Value::Tensor(_) | Value::List(_) => {}
                        Value::Global(Global::Other(name)) => {
                            return Err(CheckpointError::UnsupportedGlobal(name.to_string()));
                        }
                        other => {
                            let kind = other.kind();
                            return Err(self.err(format!("BUILD on a {kind}")));
                        }
                    }
                }
                _ => {
                    return Err(CheckpointError::UnsupportedOpcode {
                        opcode: op,
                        name: opcode_name(op),
                        offset: self.op_at,
                    });
                }
            }
        }
    }

    fn list_top(&mut self) -> Result<Rc<RefCell<Vec<Value>>>, CheckpointError> {
        match self.top()? {
            Value::List(l) => Ok(l.clone()),
            other => {
                let kind = other.kind();
                Err(self.err(format!("APPEND to a {kind}, not a list")))
            }
        }
    }
    fn dict_top(&mut self) -> Result<DictRef, CheckpointError> {
        match self.top()? {
            Value::Dict(d) => Ok(d.clone()),
            other => {
                let kind = other.kind();
                Err(self.err(format!("SETITEM on a {kind}, not a dict")))
            }
        }
    }

    /// `persistent_load` for torch's zip format: ('storage', storage class, key, location, numel).
    fn persistent_load(&self, pid: &Value) -> Result<Value, CheckpointError> {
        let Value::Tuple(t) = pid else {
            return Err(self.err(format!("persistent id is a {}, not a tuple", pid.kind())));
        };
        match t.first() {
            Some(Value::Str(s)) if &**s == "storage" => {}
            _ => return Err(self.err("persistent id is not a ('storage', ...) tuple")),
        }
        if t.len() < 3 {
            return Err(self.err("persistent storage id has fewer than 3 fields"));
        }
        let dtype = match &t[1] {
            Value::Global(Global::Storage(d)) => *d,
            Value::Global(Global::UntypedStorage) => StoredDType::U8,
            Value::Global(Global::Other(name)) => return Err(CheckpointError::UnsupportedGlobal(name.to_string())),
            other => return Err(self.err(format!("storage class is a {}, not a storage type", other.kind()))),
        };
        let key = match &t[2] {
            Value::Str(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            other => return Err(self.err(format!("storage key is a {}", other.kind()))),
        };
        Ok(Value::Storage(Rc::new(StorageRef { key, dtype })))
    }

    fn call(&mut self, func: &Value, args: &[Value]) -> Result<Value, CheckpointError> {
        let Value::Global(g) = func else {
            return Err(self.err(format!("REDUCE calls a {}, not a global", func.kind())));
        };
        match g {
            Global::OrderedDict | Global::Dict => {
                let dict = Value::Dict(Default::default());
                if let (Value::Dict(d), Some(Value::List(pairs))) = (&dict, args.first()) {
                    self.charge(pairs.borrow().len().saturating_mul(2 * std::mem::size_of::<Value>()))?;
                    for pair in pairs.borrow().iter() {
                        match pair {
                            Value::Tuple(kv) if kv.len() == 2 => dict_set(d, kv[0].clone(), kv[1].clone()),
                            Value::List(kv) if kv.borrow().len() == 2 => {
                                let kv = kv.borrow();
                                dict_set(d, kv[0].clone(), kv[1].clone())
                            }
                            _ => return Err(self.err("OrderedDict items are not (key, value) pairs")),
                        }
                    }
                }
                Ok(dict)
            }
            Global::TorchSize => match args.first() {
                Some(Value::Tuple(t)) => Ok(Value::Tuple(t.clone())),
                _ => Ok(Value::tuple(Vec::new())),
            },
            Global::RebuildTensor | Global::RebuildTensorV2 => self.rebuild_tensor(args, None),
            Global::RebuildTensorV3 => {
                // (storage, offset, size, stride, requires_grad, hooks, dtype[, metadata])
                let dtype = match args.get(6) {
                    Some(Value::Global(Global::DType(d))) => *d,
                    _ => return Err(self.err("_rebuild_tensor_v3 without a known dtype")),
                };
                self.rebuild_tensor(args, Some(dtype))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => match args.first() {
                Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                _ => Err(self.err("_rebuild_parameter without a tensor")),
            },
            Global::RebuildFromTypeV2 => match (args.first(), args.get(2)) {
                // (func, new_type, args, state): the subclass (e.g. Parameter) is dropped.
                // One level only: a hostile pickle could otherwise nest these to overflow the stack.
                (Some(Value::Global(Global::RebuildFromTypeV2)), _) => Err(self.err("nested _rebuild_from_type_v2")),
                (Some(f), Some(Value::Tuple(inner))) => self.call(f, inner),
                _ => Err(self.err("_rebuild_from_type_v2 with unexpected arguments")),
            },
            Global::Other(name) => Err(CheckpointError::UnsupportedGlobal(name.to_string())),
            Global::Storage(_) | Global::UntypedStorage | Global::DType(_) => {
                Err(self.err("calling a storage class or dtype is not supported"))
            }
        }
    }

    fn rebuild_tensor(&mut self, args: &[Value], dtype: Option<StoredDType>) -> Result<Value, CheckpointError> {
        if args.len() < 4 {
            return Err(self.err("tensor rebuild with fewer than 4 arguments"));
        }
        let mut storage = match &args[0] {
            Value::Storage(s) => s.clone(),
            other => return Err(self.err(format!("tensor storage is a {}, not a storage", other.kind()))),
        };
        if let Some(d) = dtype {
            if storage.dtype != d {
                storage = Rc::new(StorageRef { key: storage.key.clone(), dtype: d });
            }
        }
        for (what, v) in [("size", &args[2]), ("stride", &args[3])] {
            if let Value::Tuple(t) = v {
                if t.len() > MAX_RANK {
                    return Err(self.err(format!("tensor {what} has {} dimensions, more than {MAX_RANK}", t.len())));
                }
                self.charge(t.len() * std::mem::size_of::<usize>())?;
            }
        }
        let offset = self.non_negative(&args[1], "storage offset")?;
        let size = self.int_tuple(&args[2], "size")?;
        let stride = self.int_tuple(&args[3], "stride")?;
        if size.len() != stride.len() {
            return Err(self.err(format!("tensor has {} sizes but {} strides", size.len(), stride.len())));
        }
        Ok(Value::Tensor(Rc::new(TensorSpec { storage, offset, size, stride })))
    }

    fn non_negative(&self, v: &Value, what: &str) -> Result<usize, CheckpointError> {
        match v {
            Value::Int(i) => usize::try_from(*i).map_err(|_| self.err(format!("{what} {i} is negative or too large"))),
            other => Err(self.err(format!("{what} is a {}, not an int", other.kind()))),
        }
    }
    fn int_tuple(&self, v: &Value, what: &str) -> Result<Vec<usize>, CheckpointError> {
        match v {
            Value::Tuple(t) => t.iter().map(|x| self.non_negative(x, what)).collect(),
            other => Err(self.err(format!("tensor {what} is a {}, not a tuple", other.kind()))),
        }
    }
}

/// Appends a key/value pair. Python would replace an equal key in place; duplicate keys are
/// resolved that way when the tree is flattened, which keeps this O(1) per item.
fn dict_set(dict: &DictRef, k: Value, v: Value) {
    dict.borrow_mut().push((k, v));
}
