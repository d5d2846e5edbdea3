"""Device mesh and logical-axis sharding rules.

Two layers, as in MaxText: a mesh with three physical axes (`data`, `fsdp`, `tensor`) and logical axis
names carried by every parameter (nnx variable metadata `out_sharding`) and key activation. One rules
table (`LOGICAL_AXIS_RULES`) maps logical names to mesh axes; model code never names a physical axis.

A dimension whose size is not divisible by the mesh axes its rule names is left replicated (so one rules
table works for every model size and device count).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis name -> mesh axes (a tuple shards over several axes; () replicates).
LOGICAL_AXIS_RULES: Mapping[str, tuple[str, ...]] = {
    # parameters
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "mlp": ("tensor",),
    "heads": ("tensor",),       # num_heads * head_dim of q / o projections
    "kv_heads": ("tensor",),    # num_kv_heads * head_dim of k / v projections
    "layers": (),
    "norm": (),
    "lora_rank": (),
    # activations
    "batch": ("data", "fsdp"),
    "length": (),
    "act_embed": (),
    "act_heads": ("tensor",),
    "act_kv_heads": ("tensor",),
    "act_mlp": ("tensor",),
    "act_vocab": ("tensor",),
    "head_dim": (),
    "cache_length": (),
}

LogicalAxes = Sequence[Optional[str]]


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A mesh with axes ("data", "fsdp", "tensor"); one size may be -1 (= the rest of the devices)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got data={data}, fsdp={fsdp}, tensor={tensor}")
  known = math.prod(s for s in sizes if s != -1)
  if any(s == 0 or s < -1 for s in sizes) or len(devices) % known:
    raise ValueError(f"mesh data={data} fsdp={fsdp} tensor={tensor} does not fit {len(devices)} devices")
  sizes = [len(devices) // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                     f"have {len(devices)}")
  return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def auto_mesh(mesh: Mesh) -> Mesh:
  """`mesh` with every axis in Auto mode (the mode this package's shardings and constraints are written for).

  `jax.make_mesh` builds Explicit axes by default (sharding in types), under which the model's gathers
  and the sampler's masks fail to type-check; the same devices and axis names in Auto mode give the same
  layout. Raises ValueError naming any axis that is not one of MESH_AXES (its arrays would silently stay
  replicated).
  """
  if not isinstance(mesh, Mesh):
    raise TypeError(f"expected a jax.sharding.Mesh, got {type(mesh).__name__}")
  unknown = [a for a in mesh.axis_names if a not in MESH_AXES]
  if unknown:
    raise ValueError(f"mesh axes {tuple(unknown)} are not among {MESH_AXES}: the logical-axis rules "
                     f"name only those (build the mesh with jerp_jax.sharding.make_mesh)")
  if all(t == AxisType.Auto for t in mesh.axis_types):
    return mesh
  return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def logical_to_spec(logical_axes: LogicalAxes, mesh: Mesh | jax.sharding.AbstractMesh,
                    shape: Optional[Sequence[int]] = None,
                    rules: Mapping[str, tuple[str, ...]] = LOGICAL_AXIS_RULES) -> PartitionSpec:
  """The PartitionSpec of an array with these logical axes (None = replicated dimension).

  A mesh axis is used at most once; mesh axes of size 1 are dropped; with `shape` given, a dimension
  not divisible by its mesh axes' total size stays replicated.
  """
  used: set[str] = set()
  spec = []
  for dim, name in enumerate(logical_axes):
    if name is None:
      spec.append(None)
      continue
    if name not in rules:
      raise KeyError(f"logical axis {name!r} has no sharding rule; known: {sorted(rules)}")
    axes = tuple(a for a in rules[name] if a in mesh.shape and mesh.shape[a] > 1 and a not in used)
    if shape is not None and axes and shape[dim] % math.prod(mesh.shape[a] for a in axes):
      axes = ()
    used.update(axes)
    spec.append(axes[0] if len(axes) == 1 else (axes or None))
  return PartitionSpec(*spec)


def logical_to_sharding(mesh: Mesh, logical_axes: LogicalAxes,
                        shape: Optional[Sequence[int]] = None) -> NamedSharding:
  """The NamedSharding on `mesh` (in Auto mode, see `auto_mesh`) of an array with these logical axes."""
  mesh = auto_mesh(mesh)
  return NamedSharding(mesh, logical_to_spec(logical_axes, mesh, shape))


def variable_logical_axes(variable: nnx.Variable) -> Optional[tuple[Optional[str], ...]]:
  """The logical axis names stored on an nnx variable (None when it has none)."""
  names = variable.get_metadata().get("out_sharding")
  return tuple(names) if names else None


def state_shardings(state: Any, mesh: Mesh) -> Any:
  """A tree like `state` (an nnx State / pytree of Variables) holding each leaf's NamedSharding."""
  mesh = auto_mesh(mesh)

  def leaf_sharding(x):
    if isinstance(x, nnx.Variable):
      names = variable_logical_axes(x)
      value = x.get_value()
      if names is None:
        return x.replace(NamedSharding(mesh, PartitionSpec()))
      if len(names) != len(value.shape):
        raise ValueError(f"logical axes {names} do not match shape {value.shape}")
      return x.replace(logical_to_sharding(mesh, names, value.shape))
    return NamedSharding(mesh, PartitionSpec())

  return jax.tree.map(leaf_sharding, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_state(state: Any, mesh: Mesh) -> Any:
  """Places every array of an nnx State onto the NamedSharding given by its logical-axis metadata."""
  shardings = state_shardings(state, mesh)
  return jax.tree.map(
      lambda x, s: x.replace(jax.device_put(x.get_value(), s.get_value()))
      if isinstance(x, nnx.Variable) else jax.device_put(x, s),
      state, shardings, is_leaf=lambda x: isinstance(x, nnx.Variable))


def constrain(x: jax.Array, logical_axes: LogicalAxes) -> jax.Array:
  """`with_sharding_constraint` by logical axes when a mesh is set (`jax.set_mesh`); else a no-op."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not set(MESH_AXES) & set(mesh.axis_names):
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(logical_axes, mesh, x.shape))
