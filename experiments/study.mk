# Extra rule for the study program, used as: make -f Makefile -f experiments/study.mk build/experiments/study
# (reuses the Makefile's compiler flags and libraries).
$(BUILD)/experiments/study: experiments/study.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) $(LDFLAGS) $(LDLIBS) -o $@
