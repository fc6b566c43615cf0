/*
 * config.c - settings: defaults, the environment, um_configure,
 * um_mapping_set and the error handler.
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

/* "512M", "2G", "4096", "64k": bytes, or 0 if malformed. */
uint64_t um_parse_size(const char *s)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return 0;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	case 't': case 'T': v <<= 40; end++; break;
	}
	if (*end == 'i' || *end == 'I')
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	return *end ? 0 : v;
}

static bool valid_fault_size(uint64_t v)
{
	return v >= UM_PAGE && v <= (2UL << 20) && !(v & (v - 1));
}

static void env_size(const char *name, uint64_t *dst, bool (*ok)(uint64_t))
{
	const char *s = getenv(name);
	if (!s)
		return;
	uint64_t v = um_parse_size(s);
	if (!v || (ok && !ok(v)))
		fprintf(stderr, "ummap: ignoring %s=%s (not a valid size)\n", name, s);
	else
		*dst = v;
}

void um_defaults(void)
{
	uint64_t phys = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
	um.cfg.budget = phys / 4;
	/* 4 KiB, measured (512 MiB file, 64 MiB budget): random reads cost
	 * 82, 205, 769 and 1745 us per access at 4, 16, 64 and 256 KiB faults
	 * (the time goes into allocating and filling pages that are not used),
	 * while a sequential scan took the same time at every size, since
	 * readahead grows the unit there. */
	um.cfg.fault_size = 4096;
	um.cfg.readahead_max = 8UL << 20; /* the kernel's read-ahead here */
	um.cfg.writeback_ms = 30000;	  /* dirty_expire_centisecs */
	env_size("UMMAP_BUDGET", &um.cfg.budget, NULL);
	env_size("UMMAP_FAULT_SIZE", &um.cfg.fault_size, valid_fault_size);
	const char *ra = getenv("UMMAP_READAHEAD");
	if (ra && !strcmp(ra, "0"))
		um.cfg.readahead_max = 0;
	else
		env_size("UMMAP_READAHEAD", &um.cfg.readahead_max, NULL);
	const char *wb = getenv("UMMAP_WRITEBACK_MS");
	if (wb && atoll(wb) > 0)
		um.cfg.writeback_ms = (uint64_t)atoll(wb);
}

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
	if (c.fault_size && !valid_fault_size(c.fault_size)) {
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
	if (param == UM_PARAM_FAULT_SIZE && !valid_fault_size(value)) {
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
