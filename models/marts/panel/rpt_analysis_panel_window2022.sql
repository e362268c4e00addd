{{ analysis_panel(var('extended_sample_end_year')) }}
