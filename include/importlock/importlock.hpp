// SPDX-License-Identifier: BSL-1.0
// importlock/importlock.hpp: the umbrella header; includes every public header.
//
// importlock gives any keyed resource CPython's import-lock semantics:
// thread-safe, re-entrant, cycle-aware once-initialisation.
#pragma once

#include "diagnostics/import_time.hpp"
#include "errors.hpp"
#include "finders/finder_chain.hpp"
#include "finders/finder_policy.hpp"
#include "finders/function_finder.hpp"
#include "finders/meta_path_finder.hpp"
#include "finders/registry_finder.hpp"
#include "import_system.hpp"
#include "importer.hpp"
#include "key_traits.hpp"
#include "keys/name_sequence.hpp"
#include "keys/path_keys.hpp"
#include "locking/global_lock.hpp"
#include "locking/lock_policy.hpp"
#include "locking/no_locks.hpp"
#include "locking/per_key_locks.hpp"
#include "module_handle.hpp"
#include "module_spec.hpp"
#include "module_traits.hpp"
#include "observer.hpp"
#include "snapshot.hpp"
#include "tracked_mutex.hpp"
#include "tracked_thread.hpp"
#include "version.hpp"
#include "wait_graph_domain.hpp"
