/*
 * crm_none.c: [crm] type = none. Every caller is unknown and events are
 * not delivered anywhere (the SSE stream still shows them).
 */
#include "config.h"

#include "crm/crm_int.h"

const struct crm_adapter crm_adapter_none = {
	.name = "none",
};
