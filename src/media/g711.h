/*
 * g711.h: ITU-T G.711 A-law and µ-law companding, and the byte tables that
 * translate one law into the other without going through linear code in
 * the relay's hot path.
 */
#ifndef SIPCRM_G711_H
#define SIPCRM_G711_H

#include <stdint.h>

/* 16-bit linear to a code word (the low 3 bits for A-law, 2 for µ-law are
 * below the laws' resolution and simply ignored). */
uint8_t media_g711_lin2alaw(int16_t pcm);
uint8_t media_g711_lin2ulaw(int16_t pcm);
/* A code word to the 16-bit linear value at the middle of its interval. */
int16_t media_g711_alaw2lin(uint8_t a);
int16_t media_g711_ulaw2lin(uint8_t u);

/* 256-byte translation tables, filled once by media_g711_init(). */
extern uint8_t media_g711_a2u[256];
extern uint8_t media_g711_u2a[256];

/* Fills the tables; idempotent and thread safe (pthread_once). */
void media_g711_init(void);

#endif
