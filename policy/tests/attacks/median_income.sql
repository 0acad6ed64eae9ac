-- expect: non-dp-aggregate
SELECT median(annual_income) FROM residents
