-- expect: join-condition
SELECT a.district, COUNT(*) FROM residents a JOIN residents b ON a.district = b.district GROUP BY a.district
