/* service.h - the CLI's commands that run or ask the writeback service. */
#ifndef UM_TOOLS_SERVICE_H
#define UM_TOOLS_SERVICE_H

int service_main(int argc, char **argv); /* ummap service */
int service_stat(void);			 /* ummap stat */
int service_recover(void);		 /* ummap recover */

#endif
