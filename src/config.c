/*
 * config.c - the calls that change settings: um_configure, um_mapping_set,
 * the error handler and the swap store (the defaults and the environment
 * are read at start-up, engine.c).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

/*
 * The um_* calls copy the caller's structs in and out with the engine's
 * lock released: a struct may lie in a ummap page not mapped at the moment,
 * whose fault the fault thread serves only once it has the lock.
 */
int um_configure(const struct um_config *cfg)
{
	if (!cfg) {
		errno = EINVAL;
		return -1;
	}
	struct um_config c = *cfg;
	if (c.fault_size && !um_valid_fault_size(c.fault_size)) {
		errno = EINVAL;
		return -1;
	}
	um_init();
	um_lock();
	if (c.budget)
		um.cfg.budget = c.budget;
	if (c.fault_size)
		um.cfg.fault_size = c.fault_size;
	if (c.readahead_max)
		um.cfg.readahead_max = c.readahead_max;
	if (c.writeback_ms)
		__atomic_store_n(&um.cfg.writeback_ms, c.writeback_ms, __ATOMIC_RELAXED);
	um_unlock();
	if (um.ready && c.writeback_ms)
		wb_kick(); /* a shorter interval takes effect now */
	return 0;
}

int um_get_config(struct um_config *cfg)
{
	um_init();
	um_lock();
	struct um_config c = um.cfg;
	um_unlock();
	*cfg = c;
	return 0;
}

int um_mapping_set(void *addr, enum um_param param, uint64_t value)
{
	if (param == UM_PARAM_FAULT_SIZE && !um_valid_fault_size(value)) {
		errno = EINVAL;
		return -1;
	}
	um_init();
	um_lock();
	struct um_region *r = region_at((uintptr_t)addr);
	int err = 0;
	if (!r || !r->r_cache)
		err = r ? EINVAL : ENOMEM;
	else if (param == UM_PARAM_BUDGET)
		r->r_cache->c_sh->budget = value;
	else if (param == UM_PARAM_FAULT_SIZE || param == UM_PARAM_READAHEAD) {
		struct um_mapping *m = r->r_map;
		for (size_t i = 0; i < um.nregions; i++) {
			if (um.regions[i].r_map != m)
				continue;
			if (param == UM_PARAM_FAULT_SIZE)
				um.regions[i].r_fault_size = value;
			else
				um.regions[i].r_ra_max = value;
		}
	} else
		err = EINVAL;
	um_unlock();
	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}

int um_set_error_handler(um_error_handler handler, void *arg)
{
	um_init();
	um_lock();
	um.err_handler = handler;
	um.err_arg = arg;
	um_unlock();
	return 0;
}

/* (The caller's struct is copied before the lock: it may lie in a ummap page
 * not mapped at the moment, whose fault needs the lock.) */
int um_set_swap_store(const struct um_swap_store *store)
{
	struct um_swap_store s = store ? *store : (struct um_swap_store){ 0 };
	if (store && (s.version != UM_SWAP_STORE_VERSION || !s.open || !s.read || !s.write || !s.close)) {
		errno = EINVAL;
		return -1;
	}
	um_lock();
	store_swap_set(&s);
	um_unlock();
	return 0;
}
